//! docs/protocol.md's validation table names a test for every check: make sure each named test
//! exists, so the table cannot silently go stale.

use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut String) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
}

#[test]
fn every_test_named_in_the_validation_table_exists() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let spec = std::fs::read_to_string(root.join("../../docs/protocol.md")).unwrap();
    let table = spec
        .split("## 8. Validation table")
        .nth(1)
        .expect("section 8 exists")
        .split("\n## 9.")
        .next()
        .expect("section 8 ends");
    let mut code = String::new();
    sources(&root.join("src"), &mut code);
    sources(&root.join("tests"), &mut code);
    let mut rows = 0;
    let mut named = 0;
    for line in table
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| #") && !l.starts_with("|--"))
    {
        rows += 1;
        for cell in line.split('`').skip(1).step_by(2) {
            if let Some((_, name)) = cell.rsplit_once("::")
                && cell.starts_with(char::is_lowercase)
                && !cell.contains(' ')
            {
                named += 1;
                assert!(
                    code.contains(&format!("fn {name}()")),
                    "the table names `{cell}`, which does not exist"
                );
            }
        }
    }
    assert!(rows >= 40, "only {rows} rows parsed");
    assert!(
        named >= rows,
        "every row names at least one test ({named} names, {rows} rows)"
    );
}
