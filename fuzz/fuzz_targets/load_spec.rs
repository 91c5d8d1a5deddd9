//! Fuzzes the spec loader: any bytes, as a flow file and as a system file, must give a
//! loaded model or diagnostics, never a panic, a hang or a stack overflow.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use tether_engine::spec::flow::FlowFile;
use tether_engine::spec::load::{check_text, load_text};
use tether_engine::spec::system::SystemFile;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.yaml");
    let Ok(text) = check_text(path, data.to_vec()) else { return };
    let (_flow, _) = load_text::<FlowFile>(path, text.clone());
    let (_system, _) = load_text::<SystemFile>(path, text);
});
