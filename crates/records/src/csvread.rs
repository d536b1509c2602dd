//! Reading one OMOP table out of a zip archive: find its CSV entry, map the header (any
//! case) to the columns careflow keeps, parse every field, and hand rows over in batches.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::dates::parse_date;
use crate::error::RecordsError;
use crate::table::{Kind, Row, TableSpec, Value};

pub(crate) fn open_file(path: &Path) -> Result<File, RecordsError> {
    File::open(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => RecordsError::FileNotFound {
            path: path.to_path_buf(),
        },
        _ => RecordsError::Io {
            path: path.to_path_buf(),
            source,
        },
    })
}

/// Lower-case hex sha256 of a file.
pub(crate) fn sha256_file(path: &Path) -> Result<String, RecordsError> {
    let mut file = open_file(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(|source| RecordsError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn open_archive(path: &Path) -> Result<zip::ZipArchive<File>, RecordsError> {
    zip::ZipArchive::new(open_file(path)?).map_err(|e| zip_error(path, e))
}

fn zip_error(path: &Path, e: zip::result::ZipError) -> RecordsError {
    RecordsError::Zip {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Where a table's CSV lies in the archive.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub index: usize,
    /// The entry's name in the archive, e.g. `CONDITION_OCCURRENCE.csv`.
    pub name: String,
}

/// Finds `<table>.csv` (any case, any folder) for each spec, skipping macOS resource forks
/// (`__MACOSX/`, `._NAME`).
pub(crate) fn find_entries(path: &Path, specs: &[&TableSpec]) -> Result<Vec<Entry>, RecordsError> {
    let mut archive = open_archive(path)?;
    let mut found: HashMap<String, Entry> = HashMap::new();
    for index in 0..archive.len() {
        let name = archive
            .by_index_raw(index)
            .map_err(|e| zip_error(path, e))?
            .name()
            .to_string();
        let base = name.rsplit('/').next().unwrap_or(&name);
        if name.contains("__MACOSX") || base.starts_with("._") {
            continue;
        }
        let lower = base.to_ascii_lowercase();
        if let Some(stem) = lower.strip_suffix(".csv") {
            found
                .entry(stem.to_string())
                .or_insert(Entry { index, name });
        }
    }
    specs
        .iter()
        .map(|s| {
            found
                .remove(s.name)
                .ok_or_else(|| RecordsError::MissingTable {
                    path: path.to_path_buf(),
                    table: s.name.to_string(),
                })
        })
        .collect()
}

/// Streams the rows of one entry to `sink` in batches of up to `batch` rows; `sink`
/// returns false to stop early. Keys repeated within a batch keep their last row (one
/// INSERT … ON CONFLICT statement may not touch the same row twice on PostgreSQL).
/// Returns the number of rows read.
pub(crate) fn read_table(
    path: &Path,
    entry: &Entry,
    spec: &TableSpec,
    batch: usize,
    mut sink: impl FnMut(Vec<Row>) -> bool,
) -> Result<u64, RecordsError> {
    let mut archive = open_archive(path)?;
    let file = archive
        .by_index(entry.index)
        .map_err(|e| zip_error(path, e))?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(file);
    let csv_err = |e: csv::Error| RecordsError::Csv {
        file: entry.name.clone(),
        line: e.position().map(|p| p.line()).unwrap_or(0),
        field: None,
        message: e.to_string(),
    };
    let header: Vec<String> = reader
        .headers()
        .map_err(csv_err)?
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}').trim().to_ascii_lowercase())
        .collect();
    let positions: Vec<Option<usize>> = spec
        .cols
        .iter()
        .map(|c| {
            let pos = header.iter().position(|h| h == c.name);
            match (pos, c.required) {
                (None, true) => Err(RecordsError::MissingColumn {
                    file: entry.name.clone(),
                    column: c.name.to_string(),
                }),
                _ => Ok(pos),
            }
        })
        .collect::<Result<_, _>>()?;

    let mut rows: Vec<Row> = Vec::with_capacity(batch);
    let mut slot_of_key: HashMap<i64, usize> = HashMap::new();
    let mut total = 0u64;
    let mut record = csv::StringRecord::new();
    while reader.read_record(&mut record).map_err(csv_err)? {
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        let row = parse_row(&record, spec, &positions, &entry.name, line)?;
        total += 1;
        let key = match row.first() {
            Some(Value::Int(Some(k))) => Some(*k),
            _ => None,
        };
        match key.and_then(|k| slot_of_key.get(&k).copied()) {
            Some(slot) => rows[slot] = row,
            None => {
                if let Some(k) = key {
                    slot_of_key.insert(k, rows.len());
                }
                rows.push(row);
            }
        }
        if rows.len() >= batch {
            slot_of_key.clear();
            if !sink(std::mem::replace(&mut rows, Vec::with_capacity(batch))) {
                return Ok(total);
            }
        }
    }
    if !rows.is_empty() {
        sink(rows);
    }
    Ok(total)
}

fn parse_row(
    record: &csv::StringRecord,
    spec: &TableSpec,
    positions: &[Option<usize>],
    file: &str,
    line: u64,
) -> Result<Row, RecordsError> {
    let mut row = Vec::with_capacity(spec.cols.len());
    for (col, pos) in spec.cols.iter().zip(positions) {
        let raw = pos.and_then(|p| record.get(p)).unwrap_or("");
        let fail = |message: String| RecordsError::Csv {
            file: file.to_string(),
            line,
            field: Some(col.name.to_string()),
            message,
        };
        let text = raw.trim();
        if text.is_empty() {
            if col.required {
                return Err(fail("empty, but careflow needs a value".into()));
            }
            row.push(Value::null(col.kind));
            continue;
        }
        row.push(match col.kind {
            Kind::Int => Value::Int(Some(
                text.parse::<i64>()
                    .map_err(|_| fail(format!("`{text}` is not an integer")))?,
            )),
            Kind::Float => Value::Float(Some(
                text.parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| fail(format!("`{text}` is not a number")))?,
            )),
            Kind::Date => {
                Value::Date(Some(parse_date(text).ok_or_else(|| {
                    fail(format!("`{text}` is not a date (YYYY-MM-DD)"))
                })?))
            }
            Kind::Text => Value::Text(Some(raw.to_string())),
        });
    }
    Ok(row)
}
