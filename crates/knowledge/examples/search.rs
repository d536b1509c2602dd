//! Prints the passages retrieved for each line of standard input, with BM25 scores.
use std::io::BufRead;
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let g = careflow_knowledge::Guidelines::embedded()?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        println!("{line}");
        for (p, s) in g.search(&line, 5) {
            println!("  {s:6.2} {} {}", p.id, p.title);
        }
    }
    Ok(())
}
