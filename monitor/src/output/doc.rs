//! One alert document as every sink receives it: serialised once and shared, with what a syslog
//! header and its structured data take from it, read once when it is sent.
use serde_json::Value;

/// One document as every sink receives it: serialised once, shared.
pub(crate) struct Doc {
    pub json: String,
    /// What a syslog header and structured data need, taken from the document when syslog is on.
    pub syslog: Option<Fields>,
}

/// RFC 5424 severities.
pub(crate) const ERR: u8 = 3;
pub(crate) const WARNING: u8 = 4;
pub(crate) const NOTICE: u8 = 5;

/// What the header and structured data take from a document, read when it is sent so the sink
/// thread need not parse the JSON again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Fields {
    /// RFC 5424 severity: `ERR`, `WARNING` or `NOTICE`.
    pub severity: u8,
    /// `@timestamp` when it is an RFC 5424 time.
    pub timestamp: Option<String>,
    pub hostname: Option<String>,
    /// From `event.action`.
    pub msgid: Option<String>,
    /// Structured-data parameters: name, value.
    pub params: Vec<(&'static str, String)>,
}

/// Structured-data parameters and where they come from in a document given as JSON (one fimd
/// did not build: [`super::typed::Alert`] gives its own from its typed parts).
const PARAMS: &[(&str, &str)] = &[
    ("action", "/event/action"),
    ("kind", "/event/kind"),
    ("outcome", "/event/outcome"),
    ("path", "/file/path"),
    ("sha256", "/file/hash/sha256"),
    ("policy", "/fim/policy"),
    ("changes", "/fim/changes"),
    ("pid", "/process/pid"),
    ("exe", "/process/executable"),
    ("uid", "/user/id"),
    ("container", "/container/id"),
];

impl Fields {
    pub fn of(doc: &Value) -> Fields {
        let text = |p: &str| doc.pointer(p).and_then(Value::as_str);
        let kind = text("/event/kind");
        let problem = kind == Some("pipeline_error")
            || text("/event/outcome") == Some("failure")
            || text("/event/action") == Some("not_compared");
        let severity = if problem {
            ERR
        } else if kind == Some("alert") {
            WARNING
        } else {
            NOTICE
        };
        let params = PARAMS
            .iter()
            .filter_map(|(name, ptr)| {
                let v = match doc.pointer(ptr)? {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    Value::Array(a) => {
                        let items: Vec<String> = a
                            .iter()
                            .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))
                            .collect();
                        if items.is_empty() {
                            return None;
                        }
                        items.join(",")
                    }
                    _ => return None,
                };
                Some((*name, v))
            })
            .collect();
        Fields {
            severity,
            timestamp: text("/@timestamp")
                .filter(|t| is_rfc5424_time(t))
                .map(str::to_owned),
            hostname: text("/host/name").map(|h| printable(h, 255)),
            msgid: text("/event/action").map(|a| printable(a, 32)),
            params,
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.1-6 digits](Z|±HH:MM)`, the only form RFC 5424 allows.
pub(crate) fn is_rfc5424_time(t: &str) -> bool {
    let b = t.as_bytes();
    let digits = |r: std::ops::Range<usize>| b.get(r).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
    if b.len() < 20
        || !(digits(0..4) && b[4] == b'-' && digits(5..7) && b[7] == b'-' && digits(8..10))
        || !(b[10] == b'T' && digits(11..13) && b[13] == b':' && digits(14..16) && b[16] == b':')
        || !digits(17..19)
    {
        return false;
    }
    let mut i = 19;
    if b[i] == b'.' {
        let n = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=6).contains(&n) {
            return false;
        }
        i += 1 + n;
    }
    match &b[i..] {
        [b'Z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit()),
        _ => false,
    }
}

/// A header field: printable US-ASCII without spaces (others become `_`), at most `max` long;
/// `-` (the nil value) when empty.
pub(crate) fn printable(s: &str, max: usize) -> String {
    let out: String = s
        .chars()
        .take(max)
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .collect();
    if out.is_empty() { "-".into() } else { out }
}
