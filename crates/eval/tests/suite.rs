//! The lenient suite loader: bad lines are reported with line and field, good lines still load.

use careflow_eval::suite::{load_suite, parse_suite, Scale};
use careflow_eval::EvalError;
use std::path::PathBuf;

const TEXT: &str = concat!(
    r#"{"id": "s1", "message": "chest pain and sweating", "gold": "emergency_now"}"#,
    "\n",
    r#"{"id": "s2", "message": "#,
    "\n",
    r#"{"id": "s3", "message": "a rash"}"#,
    "\n",
    r#"{"id": "s4", "message": "a rash", "gold": "urgent"}"#,
    "\n",
    r#"{"id": "s1", "message": "again", "gold": "routine"}"#,
    "\n",
    r#"{"id": "s6", "message": "m", "gold": "routine", "patient_id": -3}"#,
    "\n",
    "\n",
    r#"{"id": "s8", "message": "m", "gold": "emergent", "patient_id": 5, "tags": ["child"]}"#,
    "\n",
    r#"{"id": "s9", "message": "m", "golds": "routine"}"#,
    "\n",
    r#"{"id": "s10", "message": "m", "gold": "routine", "scale": "five_level"}"#,
    "\n",
    r#"{"id": "s11", "message": "m", "gold": "non_emergent", "scale": "four_level"}"#,
    "\n",
    "[1, 2]\n",
    r#"{"id": "s13", "message": "refill please", "patient_id": null, "gold": "admin", "rules": [], "rationale": "r", "tags": []}"#,
    "\n",
    r#"{"id": "s14", "message": "m", "gold": "self_care", "scale": "3-level", "patient_id": "7"}"#,
    "\n",
    r#"{"id": "s15", "message": "m", "gold": "self_care", "scale": "3-level"}"#,
    "\r\n",
);

#[test]
fn malformed_lines_name_line_and_field_and_the_rest_still_loads() {
    let s = parse_suite(TEXT);
    let ids: Vec<&str> = s.items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["s1", "s8", "s13", "s15"]);
    let got: Vec<(usize, Option<&str>)> = s
        .problems
        .iter()
        .map(|p| (p.line, p.field.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            (2, None),
            (3, Some("gold")),
            (4, Some("gold")),
            (5, Some("id")),
            (6, Some("patient_id")),
            (9, Some("golds")),
            (10, Some("scale")),
            (11, Some("gold")),
            (12, None),
            (14, Some("patient_id")),
        ]
    );
    // The unknown label is named; the duplicate names its first line.
    assert!(
        s.problems[2].message.contains("`urgent`"),
        "{}",
        s.problems[2]
    );
    assert!(
        s.problems[3].message.contains("line 1"),
        "{}",
        s.problems[3]
    );
    assert_eq!(
        s.problems[1].to_string(),
        "line 3: field `gold`: is missing"
    );
    // Good lines keep their data, line number and scale.
    let s8 = &s.items[1];
    assert_eq!((s8.line, s8.patient_id), (8, Some(5)));
    assert_eq!(s8.gold.scale, Scale::FourLevel);
    assert_eq!(s8.tags, ["child"]);
    assert_eq!(s.items[2].rationale.as_deref(), Some("r"));
    assert_eq!(s.items[3].gold.scale, Scale::ThreeLevel);
}

#[test]
fn the_dev_suite_loads_without_problems_and_agrees_with_the_strict_loader() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/eval/dev.jsonl");
    let lenient = load_suite(&path).expect("readable");
    assert!(lenient.problems.is_empty(), "{:?}", lenient.problems);
    let strict = careflow_knowledge::eval::load_suite(&path).expect("strict loader");
    assert_eq!(lenient.items.len(), strict.len());
    for (a, b) in lenient.items.iter().zip(&strict) {
        assert_eq!(
            (a.id.as_str(), a.gold.label.as_str()),
            (b.id.as_str(), b.gold.as_str())
        );
        assert_eq!((a.patient_id, a.line), (b.patient_id, b.line));
        assert_eq!(a.gold.disposition(), b.gold_disposition());
    }
}

#[test]
fn only_an_unreadable_file_is_an_error() {
    let err = load_suite("/nonexistent/careflow/suite.jsonl").unwrap_err();
    assert!(matches!(err, EvalError::Io { .. }), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.jsonl");
    let mut bytes = b"{\"id\":\"a\",\"message\":\"m\",\"gold\":\"routine\"}\n".to_vec();
    bytes.extend_from_slice(b"{\"id\":\"b\",\"message\":\"\xff\xfe\",\"gold\":\"routine\"}\n");
    std::fs::write(&path, bytes).unwrap();
    let s = load_suite(&path).expect("lenient");
    assert_eq!(s.items.len(), 1);
    assert_eq!(s.problems.len(), 1);
    assert_eq!(s.problems[0].line, 2);
    assert!(s.problems[0].message.contains("UTF-8"));
    std::fs::write(&path, "").unwrap();
    let s = load_suite(&path).expect("an empty file is not an error");
    assert!(s.items.is_empty() && s.problems.is_empty());
}
