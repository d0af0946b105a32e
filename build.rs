//! Records the commit Scalpel is built from, for the run store's metadata.
use std::path::Path;
use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=SCALPEL_GIT_COMMIT={commit}");
    // Rebuild when HEAD moves; only existing paths, as a missing one reruns every build.
    let head = Path::new(".git/HEAD");
    if head.exists() {
        println!("cargo:rerun-if-changed=.git/HEAD");
        if let Ok(text) = std::fs::read_to_string(head) {
            if let Some(r) = text.trim().strip_prefix("ref: ") {
                let p = Path::new(".git").join(r);
                if p.exists() {
                    println!("cargo:rerun-if-changed={}", p.display());
                }
            }
        }
    } else {
        println!("cargo:rerun-if-changed=build.rs");
    }
}
