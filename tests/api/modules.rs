//! The module graph: `.ci/module-cycles` finds no cycle among the top-level modules of the
//! crate (and names one when there is).

use std::path::Path;
use std::process::Command;

fn run(src: &Path) -> (bool, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/module-cycles");
    let out = Command::new("python3")
        .arg(&script)
        .arg(src)
        .output()
        .expect("python3 runs .ci/module-cycles");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn the_top_level_modules_have_no_cycle() {
    let (ok, text) = run(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(ok, "{text}");
    assert!(text.starts_with("no module cycle"), "{text}");
}

#[test]
fn a_cycle_is_named_with_its_edges() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path();
    std::fs::create_dir_all(src.join("chat")).expect("dir");
    std::fs::write(src.join("app.rs"), "use crate::chat::Chat;\n").expect("app");
    std::fs::write(
        src.join("chat/mod.rs"),
        "use crate::knowledge::Knowledge;\n#[cfg(test)]\nmod tests {\n    use crate::app::App;\n}\n",
    )
    .expect("chat");
    std::fs::write(src.join("knowledge.rs"), "fn f() { crate::app::x(); }\n").expect("knowledge");
    let (ok, text) = run(src);
    assert!(!ok, "{text}");
    assert!(text.contains("app -> chat -> knowledge -> app"), "{text}");
    assert!(text.contains("knowledge.rs:1"), "{text}");
    // An edge only a test module makes is no edge.
    std::fs::write(src.join("knowledge.rs"), "fn f() {}\n").expect("knowledge");
    let (ok, text) = run(src);
    assert!(ok, "{text}");
}
