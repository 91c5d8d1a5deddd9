//! The console's HTML building blocks: escaping, the page layout, and small pieces every page
//! uses (values, times, badges, record links, forms that call the API). Pure functions of
//! their arguments; everything dynamic goes through [`esc`].

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde_json::Value;

/// Text made safe for HTML content and quoted attribute values (the documents' escaping).
pub use tether_engine::docs::esc;

/// Text made safe for a URL's query value.
pub fn query_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b':' => {
                out.push(char::from(byte));
            }
            _ => {
                let _ = write!(out, "%{byte:02X}");
            }
        }
    }
    out
}

/// A JSON value as people read it: text as it is, anything else as compact JSON; escaped.
pub fn value(v: &Value) -> String {
    match v {
        Value::String(s) => esc(s),
        Value::Null => "<span class=\"muted\">none</span>".to_owned(),
        other => format!("<code>{}</code>", esc(&other.to_string())),
    }
}

/// An optional JSON value.
pub fn opt_value(v: Option<&Value>) -> String {
    v.map_or_else(|| "<span class=\"muted\">none</span>".to_owned(), value)
}

/// A time, to the second.
pub fn time(t: &DateTime<Utc>) -> String {
    format!(
        "<time datetime=\"{}\">{}</time>",
        esc(&t.to_rfc3339()),
        esc(&t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
    )
}

/// A word in a coloured pill: `kind` is one of `ok`, `warn`, `bad`, `muted`.
pub fn badge(kind: &str, text: &str) -> String {
    format!("<span class=\"badge {}\">{}</span>", esc(kind), esc(text))
}

/// A link to a record's page.
pub fn record_link(reference: &str) -> String {
    format!(
        "<a class=\"record\" href=\"/console/record?q={}\">{}</a>",
        query_value(reference),
        esc(reference)
    )
}

/// A form the console's script sends as JSON to an API endpoint. `fields` are its inputs
/// and buttons (already HTML); `reload` reloads the page after success, showing the answer.
pub fn api_form(endpoint: &str, class: &str, reload: bool, fields: &str) -> String {
    format!(
        "<form class=\"api {}\" data-api=\"{}\"{}>{fields}<output class=\"answer\" aria-live=\"polite\"></output></form>",
        esc(class),
        esc(endpoint),
        if reload { " data-reload" } else { "" },
    )
}

/// A hidden input; with `list` its value joins an array of that name.
pub fn hidden(name: &str, value: &str, list: bool) -> String {
    format!(
        "<input type=\"hidden\" name=\"{}\" value=\"{}\"{}>",
        esc(name),
        esc(value),
        if list { " data-list" } else { "" }
    )
}

/// The page around a body: header, navigation, the answer of the last action.
pub fn layout(title: &str, active: &str, body: &str, logout: bool) -> String {
    let mut nav = String::new();
    // The login page (no section, no session) shows no navigation.
    let pages: &[(&str, &str)] = if active.is_empty() && !logout {
        &[]
    } else {
        &[
            ("/console", "Overview"),
            ("/console/runs", "Runs"),
            ("/console/parked", "Parked"),
            ("/console/conflicts", "Conflicts"),
            ("/console/record", "Records"),
        ]
    };
    for &(href, label) in pages {
        let current = if label == active {
            " aria-current=\"page\""
        } else {
            ""
        };
        let _ = write!(nav, "<a href=\"{href}\"{current}>{label}</a>");
    }
    let logout = if logout {
        "<form method=\"post\" action=\"/console/logout\" class=\"logout\"><button type=\"submit\">Log out</button></form>"
    } else {
        ""
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title} · Tether</title>\
<link rel=\"stylesheet\" href=\"/console/assets/console.css\">\
<script src=\"/console/assets/console.js\" defer></script></head>\
<body><header><a class=\"brand\" href=\"/console\">Tether</a><nav>{nav}</nav>{logout}</header>\
<main><div id=\"flash\" role=\"status\" hidden></div><h1>{title}</h1>\n{body}</main></body></html>\n",
        title = esc(title),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn everything_dynamic_is_escaped() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(value(&json!("<b>")), "&lt;b&gt;");
        assert_eq!(
            value(&json!({"a": "<i>"})),
            "<code>{&quot;a&quot;:&quot;&lt;i&gt;&quot;}</code>"
        );
        assert!(value(&Value::Null).contains("none"));
        let link = record_link("keap:companies:1\"><script>");
        assert!(!link.contains("<script>"), "{link}");
        assert!(
            link.contains("q=keap:companies:1%22%3E%3Cscript%3E"),
            "{link}"
        );
        assert_eq!(query_value("a b@c.example"), "a%20b%40c.example");
        let page = layout("<Parked>", "Parked", "<p>body</p>", true);
        assert!(page.contains("<title>&lt;Parked&gt; · Tether</title>"));
        assert!(page.contains("href=\"/console/parked\" aria-current=\"page\""));
        assert!(page.contains("Log out"));
        assert!(!layout("Log in", "", "", false).contains("Log out"));
    }
}
