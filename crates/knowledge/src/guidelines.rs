//! The guideline corpus (`data/guidelines/*.md`), BM25 retrieval over it, and the compact
//! digest that goes into the model's shared prefix.
//!
//! File format (one topic per file):
//!
//! ```text
//! > careflow supports clinicians; this text is not a diagnosis.
//! # Low back pain
//! Source: https://… (the topic's main source)
//! Digest: the red flags in a few words, for the shared prefix
//!
//! ## back-01: When back pain can be managed at home
//! Two to five sentences in plain language.
//! Source: https://…
//! ```

use crate::KnowledgeError;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// BM25 term-frequency saturation.
const K1: f32 = 1.2;
/// BM25 length normalisation.
const B: f32 = 0.75;

const EMBEDDED: &[(&str, &str)] = &[
    (
        "back_pain.md",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/guidelines/back_pain.md"
        )),
    ),
    (
        "chest_pain.md",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/guidelines/chest_pain.md"
        )),
    ),
    (
        "headache.md",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/guidelines/headache.md"
        )),
    ),
    (
        "stroke.md",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/guidelines/stroke.md"
        )),
    ),
    (
        "breathing.md",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/guidelines/breathing.md"
        )),
    ),
    (
        "abdominal_pain.md",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/guidelines/abdominal_pain.md"
        )),
    ),
    (
        "fever_children.md",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/guidelines/fever_children.md"
        )),
    ),
    (
        "mental_health.md",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/guidelines/mental_health.md"
        )),
    ),
    (
        "allergy.md",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/guidelines/allergy.md"
        )),
    ),
    (
        "pregnancy_bleeding.md",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/guidelines/pregnancy_bleeding.md"
        )),
    ),
    (
        "urinary.md",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/guidelines/urinary.md"
        )),
    ),
    (
        "sore_throat.md",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/guidelines/sore_throat.md"
        )),
    ),
    (
        "rash.md",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/guidelines/rash.md"
        )),
    ),
    (
        "self_care.md",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/guidelines/self_care.md"
        )),
    ),
    (
        "admin.md",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/guidelines/admin.md"
        )),
    ),
];

/// Words too common to help retrieval.
const STOP_WORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "been", "but", "by", "can", "do", "for", "from",
    "had", "has", "have", "i", "i'm", "i've", "if", "in", "into", "is", "it", "it's", "its", "me",
    "my", "of", "on", "or", "our", "should", "so", "that", "the", "their", "them", "then", "there",
    "they", "this", "to", "was", "we", "were", "what", "when", "which", "who", "will", "with",
    "you", "your",
];

/// One retrievable passage of the corpus.
#[derive(Debug, Clone, Serialize)]
pub struct Passage {
    /// `back-01`, `chest-02` …
    pub id: String,
    pub title: String,
    pub text: String,
    /// The public page the passage paraphrases.
    pub source: String,
}

/// One topic file.
#[derive(Debug, Clone, Serialize)]
pub struct Topic {
    pub title: String,
    pub file: String,
    pub source: String,
    /// The topic's red flags in a few words (the `Digest:` line).
    pub digest: String,
    pub passage_ids: Vec<String>,
}

/// The guideline corpus with a BM25 index over its passages.
#[derive(Debug, Clone)]
pub struct Guidelines {
    passages: Vec<Passage>,
    topics: Vec<Topic>,
    by_id: HashMap<String, usize>,
    postings: HashMap<String, Vec<(usize, u32)>>,
    doc_len: Vec<u32>,
    avg_len: f32,
}

impl Guidelines {
    /// The corpus compiled into the binary from `data/guidelines/*.md`.
    pub fn embedded() -> Result<Guidelines, KnowledgeError> {
        let files: Vec<(String, String)> = EMBEDDED
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect();
        Self::from_files(files)
    }

    /// Every `*.md` file of a directory (in name order; `README.md` is skipped).
    pub fn from_dir(dir: &Path) -> Result<Guidelines, KnowledgeError> {
        let io = |file: String, e: std::io::Error| KnowledgeError::Io {
            file,
            reason: e.to_string(),
        };
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| io(dir.display().to_string(), e))? {
            let path = entry.map_err(|e| io(dir.display().to_string(), e))?.path();
            let is_md = path.extension().and_then(|e| e.to_str()) == Some("md");
            let is_readme = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.eq_ignore_ascii_case("readme.md"));
            if is_md && !is_readme && path.is_file() {
                paths.push(path);
            }
        }
        paths.sort();
        let mut files = Vec::new();
        for path in paths {
            let name = path.display().to_string();
            let text = std::fs::read_to_string(&path).map_err(|e| io(name.clone(), e))?;
            files.push((name, text));
        }
        if files.is_empty() {
            return Err(KnowledgeError::Empty {
                place: dir.display().to_string(),
                reason: "no *.md guideline files".into(),
            });
        }
        Self::from_files(files)
    }

    /// A corpus from `(file name, markdown)` pairs.
    pub fn from_files(files: Vec<(String, String)>) -> Result<Guidelines, KnowledgeError> {
        let mut passages: Vec<Passage> = Vec::new();
        let mut topics = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        for (name, text) in &files {
            let (topic, file_passages) = parse_markdown(name, text)?;
            for p in &file_passages {
                if !seen.insert(p.id.clone()) {
                    return Err(KnowledgeError::Passage {
                        file: name.clone(),
                        id: p.id.clone(),
                        reason: "duplicate passage id (also used in another file or section)"
                            .into(),
                    });
                }
            }
            passages.extend(file_passages);
            topics.push(topic);
        }
        let by_id = passages
            .iter()
            .enumerate()
            .map(|(i, p)| (p.id.clone(), i))
            .collect();
        let mut postings: HashMap<String, Vec<(usize, u32)>> = HashMap::new();
        let mut doc_len = Vec::with_capacity(passages.len());
        for (d, p) in passages.iter().enumerate() {
            // The topic's title counts twice: a passage about back pain should win a query
            // about back pain over one that merely shares words like "sharp" or "lower".
            let topic = topics
                .iter()
                .find(|t| t.passage_ids.contains(&p.id))
                .map_or("", |t| t.title.as_str());
            let toks = index_tokens(&format!("{topic} {topic} {} {}", p.title, p.text));
            doc_len.push(toks.len() as u32);
            let mut tf: HashMap<String, u32> = HashMap::new();
            for t in toks {
                *tf.entry(t).or_default() += 1;
            }
            for (t, n) in tf {
                postings.entry(t).or_default().push((d, n));
            }
        }
        let avg_len = if doc_len.is_empty() {
            1.0
        } else {
            doc_len.iter().map(|&l| l as f32).sum::<f32>() / doc_len.len() as f32
        };
        Ok(Guidelines {
            passages,
            topics,
            by_id,
            postings,
            doc_len,
            avg_len,
        })
    }

    pub fn passages(&self) -> &[Passage] {
        &self.passages
    }

    /// The topic files, in load order.
    pub fn topics(&self) -> &[Topic] {
        &self.topics
    }

    pub fn get(&self, id: &str) -> Option<&Passage> {
        self.by_id.get(id).map(|&i| &self.passages[i])
    }

    /// BM25 (k1 = 1.2, b = 0.75) over lower-cased word tokens with plural `s` stripped and
    /// stop words dropped. Best first; only passages with a score above zero; at most `k`.
    pub fn search(&self, query: &str, k: usize) -> Vec<(Passage, f32)> {
        if k == 0 || self.passages.is_empty() {
            return Vec::new();
        }
        let n = self.passages.len() as f32;
        // A term repeated in the query counts again (the workflow appends the recognised
        // findings to the patient's words, so they weigh double).
        let terms = index_tokens(query);
        let mut scores = vec![0.0f32; self.passages.len()];
        for term in &terms {
            let Some(list) = self.postings.get(term) else {
                continue;
            };
            let df = list.len() as f32;
            let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
            for &(d, tf) in list {
                let tf = tf as f32;
                let norm = 1.0 - B + B * self.doc_len[d] as f32 / self.avg_len;
                scores[d] += idf * tf * (K1 + 1.0) / (tf + K1 * norm);
            }
        }
        let mut ranked: Vec<(usize, f32)> = scores
            .into_iter()
            .enumerate()
            .filter(|(_, s)| *s > 0.0)
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked
            .into_iter()
            .take(k)
            .map(|(d, s)| (self.passages[d].clone(), s))
            .collect()
    }

    /// A compact digest of the whole corpus for the model's shared prefix: one line per topic
    /// with its title, passage ids and red flags in a few words.
    pub fn digest(&self) -> String {
        let mut out = String::from(
            "Guideline digest (supports clinicians; not a diagnosis; cite passage ids). \
             Levels: emergency_now > urgent_same_day > within_24_72h > routine > self_care.\n",
        );
        for t in &self.topics {
            out.push_str(&format!(
                "- {} [{}]: {}\n",
                t.title,
                t.passage_ids.join(","),
                t.digest
            ));
        }
        out
    }
}

/// Lower-cased word tokens for the index: stop words dropped, plural `s` stripped.
fn index_tokens(text: &str) -> Vec<String> {
    text.to_lowercase()
        .replace('\u{2019}', "'")
        .split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .map(|w| w.trim_matches('\''))
        .filter(|w| !w.is_empty() && !STOP_WORDS.contains(w))
        .map(stem)
        .collect()
}

fn stem(word: &str) -> String {
    let w = word.strip_suffix("'s").unwrap_or(word);
    if w.len() > 4 && w.ends_with("ies") {
        return format!("{}y", &w[..w.len() - 3]);
    }
    if w.len() > 3
        && w.ends_with('s')
        && !(w.ends_with("ss") || w.ends_with("us") || w.ends_with("is"))
    {
        return w[..w.len() - 1].to_string();
    }
    w.to_string()
}

fn valid_passage_id(id: &str) -> bool {
    let Some((topic, num)) = id.rsplit_once('-') else {
        return false;
    };
    !topic.is_empty()
        && topic.chars().all(|c| c.is_ascii_lowercase())
        && num.len() == 2
        && num.chars().all(|c| c.is_ascii_digit())
}

fn is_url(s: &str) -> bool {
    (s.starts_with("https://") || s.starts_with("http://"))
        && !s.contains(char::is_whitespace)
        && s.len() > 10
}

/// A passage being read: id, title, lines of text, source, line number of its heading.
type OpenPassage = (String, String, Vec<String>, Option<String>, usize);

fn parse_markdown(file: &str, text: &str) -> Result<(Topic, Vec<Passage>), KnowledgeError> {
    let ferr = |reason: String| KnowledgeError::Guideline {
        file: file.to_string(),
        reason,
    };
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim()));
    let note = lines.by_ref().find(|(_, l)| !l.is_empty());
    match note {
        Some((_, l)) if l.starts_with('>') && l.to_lowercase().contains("not a diagnosis") => {}
        _ => {
            return Err(ferr(
                "must start with a one-line note (`> careflow supports clinicians; … not a diagnosis.`)".into(),
            ))
        }
    }
    let mut title: Option<String> = None;
    let mut source: Option<String> = None;
    let mut digest: Option<String> = None;
    let mut passages: Vec<Passage> = Vec::new();
    let mut current: Option<OpenPassage> = None;

    let finish = |cur: OpenPassage| -> Result<Passage, KnowledgeError> {
        let (id, ptitle, body, src, line) = cur;
        let perr = |reason: String| KnowledgeError::Passage {
            file: file.to_string(),
            id: id.clone(),
            reason: format!("{reason} (section at line {line})"),
        };
        let text = body.join(" ");
        if text.trim().is_empty() {
            return Err(perr("has no text".into()));
        }
        let Some(src) = src else {
            return Err(perr("has no `Source: <url>` line".into()));
        };
        Ok(Passage {
            id: id.clone(),
            title: ptitle,
            text,
            source: src,
        })
    };

    for (n, line) in lines {
        if let Some(h) = line.strip_prefix("## ") {
            if let Some(cur) = current.take() {
                passages.push(finish(cur)?);
            }
            let Some((id, ptitle)) = h.split_once(':') else {
                return Err(ferr(format!(
                    "line {n}: a passage heading must read `## <id>: <title>`"
                )));
            };
            let (id, ptitle) = (id.trim().to_string(), ptitle.trim().to_string());
            if !valid_passage_id(&id) {
                return Err(KnowledgeError::Passage {
                    file: file.to_string(),
                    id,
                    reason: format!("line {n}: passage ids look like `back-01` (lower-case topic, dash, two digits)"),
                });
            }
            if ptitle.is_empty() {
                return Err(KnowledgeError::Passage {
                    file: file.to_string(),
                    id,
                    reason: format!("line {n}: passage has no title"),
                });
            }
            current = Some((id, ptitle, Vec::new(), None, n));
            continue;
        }
        if let Some(h) = line.strip_prefix("# ") {
            if title.is_some() || current.is_some() {
                return Err(ferr(format!("line {n}: a second `# ` title")));
            }
            title = Some(h.trim().to_string());
            continue;
        }
        if let Some(url) = line.strip_prefix("Source:") {
            let url = url.trim().to_string();
            if !is_url(&url) {
                let reason = format!("line {n}: `Source:` must be one http(s) URL, found `{url}`");
                return Err(match &current {
                    Some((id, ..)) => KnowledgeError::Passage {
                        file: file.to_string(),
                        id: id.clone(),
                        reason,
                    },
                    None => ferr(reason),
                });
            }
            match current.as_mut() {
                Some(cur) => cur.3 = Some(url),
                None => source = Some(url),
            }
            continue;
        }
        if let Some(d) = line.strip_prefix("Digest:") {
            if current.is_some() {
                return Err(ferr(format!(
                    "line {n}: `Digest:` belongs before the first passage"
                )));
            }
            digest = Some(d.trim().to_string());
            continue;
        }
        if line.is_empty() {
            continue;
        }
        match current.as_mut() {
            Some(cur) => cur.2.push(line.to_string()),
            None => {
                return Err(ferr(format!(
                    "line {n}: text outside a `## <id>: <title>` passage"
                )))
            }
        }
    }
    if let Some(cur) = current.take() {
        passages.push(finish(cur)?);
    }
    let title = title.ok_or_else(|| ferr("has no `# <title>` line".into()))?;
    let source = source.ok_or_else(|| {
        ferr("has no topic-level `Source: <url>` line before its passages".into())
    })?;
    let digest = digest
        .filter(|d| !d.is_empty())
        .ok_or_else(|| ferr("has no `Digest: <red flags in a few words>` line".into()))?;
    if passages.is_empty() {
        return Err(ferr("has no `## <id>: <title>` passages".into()));
    }
    let topic = Topic {
        title,
        file: file.to_string(),
        source,
        digest,
        passage_ids: passages.iter().map(|p| p.id.clone()).collect(),
    };
    Ok((topic, passages))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stemming_strips_plurals_only() {
        assert_eq!(stem("headaches"), "headache");
        assert_eq!(stem("injuries"), "injury");
        assert_eq!(stem("illness"), "illness");
        assert_eq!(stem("stools"), "stool");
        assert_eq!(stem("gas"), "gas");
    }

    #[test]
    fn malformed_files_name_the_file_and_passage() {
        let ok = "> careflow supports clinicians; this is not a diagnosis.\n# T\nSource: https://example.org/x\nDigest: d\n## t-01: A\nSome text.\nSource: https://example.org/a\n";
        assert!(parse_markdown("t.md", ok).is_ok());
        let no_source = ok.replace("Source: https://example.org/a\n", "");
        let err = parse_markdown("t.md", &no_source).unwrap_err().to_string();
        assert!(
            err.contains("t.md") && err.contains("t-01") && err.contains("Source"),
            "{err}"
        );
        let no_note = ok.replacen(
            "> careflow supports clinicians; this is not a diagnosis.\n",
            "",
            1,
        );
        assert!(parse_markdown("t.md", &no_note)
            .unwrap_err()
            .to_string()
            .contains("t.md"));
        let bad_id = ok.replace("t-01", "T1");
        assert!(parse_markdown("t.md", &bad_id)
            .unwrap_err()
            .to_string()
            .contains("T1"));
        let dup =
            Guidelines::from_files(vec![("a.md".into(), ok.into()), ("b.md".into(), ok.into())]);
        assert!(dup.unwrap_err().to_string().contains("b.md"));
    }
}
