//! `tether schema`: writes (or checks) the JSON Schemas of flow and system files.

use std::path::Path;

use anyhow::Context as _;

use crate::exit;

pub fn run(out: &Path, check: bool) -> anyhow::Result<u8> {
    let mut stale = Vec::new();
    for (name, text) in tether_engine::spec::schema::schemas() {
        let path = out.join(name);
        if check {
            let current = std::fs::read_to_string(&path).unwrap_or_default();
            if current != text {
                stale.push(path);
            }
        } else {
            std::fs::create_dir_all(out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            std::fs::write(&path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            println!("wrote {}", path.display());
        }
    }
    if stale.is_empty() {
        Ok(exit::OK)
    } else {
        for path in &stale {
            eprintln!("{} is stale: run `tether schema`", path.display());
        }
        Ok(exit::FAILED)
    }
}
