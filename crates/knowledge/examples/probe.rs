use careflow_core::RecordFacts;
fn main() {
    let set = careflow_knowledge::RuleSet::embedded().expect("loads");
    for line in std::io::stdin().lines().map_while(Result::ok) {
        if line.trim().is_empty() {
            continue;
        }
        let o = set.evaluate(&line, &RecordFacts::default());
        println!(
            "{:<70} => {:?} {:?} admin={} {:?}",
            line,
            o.floor.map(|f| f.label()),
            o.fired.iter().map(|f| f.id.as_str()).collect::<Vec<_>>(),
            o.admin_request,
            o.findings
        );
    }
}
