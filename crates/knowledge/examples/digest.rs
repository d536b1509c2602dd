fn main() {
    let g = careflow_knowledge::Guidelines::embedded().expect("loads");
    print!("{}", g.digest());
}
