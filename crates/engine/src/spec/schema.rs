//! JSON Schemas of flow and system files, generated from the model. They are checked in
//! under `schemas/` so editors can complete and check files as users type.

use crate::spec::flow::FlowFile;
use crate::spec::system::SystemFile;

/// File name and pretty JSON of each schema.
pub fn schemas() -> Vec<(&'static str, String)> {
    vec![
        ("flow.schema.json", render(schemars::schema_for!(FlowFile))),
        (
            "system.schema.json",
            render(schemars::schema_for!(SystemFile)),
        ),
    ]
}

fn render(schema: schemars::Schema) -> String {
    let mut text =
        serde_json::to_string_pretty(&schema).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    text.push('\n');
    text
}
