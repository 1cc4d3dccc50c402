//! The untyped packets a client may open a connection with.
//!
//! StartupMessage, SSLRequest, GSSENCRequest and CancelRequest carry no type byte:
//! a 4-byte length and a 4-byte code tell them apart. PostgreSQL caps them at
//! 10,000 bytes (`MAX_STARTUP_PACKET_LENGTH`); so does pgmux.

use super::frame::cstr;

/// Largest startup packet accepted, as in PostgreSQL's `pqcomm.h`.
pub const MAX_STARTUP_PACKET: usize = 10_000;
pub const CANCEL_REQUEST_CODE: i32 = 80877102;
pub const SSL_REQUEST_CODE: i32 = 80877103;
pub const GSSENC_REQUEST_CODE: i32 = 80877104;
/// The request code of a pgmux peer packet (`fleet::wire`): 1234 in the high half,
/// 5690 in the low.
pub const FLEET_REQUEST_CODE: i32 = (1234 << 16) | 5690;
/// Longest secret the protocol allows in a CancelRequest.
pub const MAX_CANCEL_KEY_LEN: usize = 256;
const PROTOCOL_3: u16 = 3;
/// Protocol versions as a StartupMessage carries them: `(major << 16) | minor`.
pub const PROTOCOL_3_0: i32 = 3 << 16;
/// PostgreSQL 18's: BackendKeyData and CancelRequest with longer secrets.
pub const PROTOCOL_3_2: i32 = (3 << 16) | 2;

/// The first packet of a connection, decoded.
#[derive(Debug, PartialEq, Eq)]
pub enum FirstPacket {
    Ssl,
    GssEnc,
    Cancel {
        pid: i32,
        secret: Vec<u8>,
    },
    /// A packet from another pgmux instance of the fleet (its body after the code;
    /// see `fleet::wire`).
    Fleet(Vec<u8>),
    Startup(Startup),
}

/// A StartupMessage: the protocol version asked for and the parameters, in order.
#[derive(Debug, Default, PartialEq, Eq, Clone)]
pub struct Startup {
    pub minor_version: u16,
    pub params: Vec<(String, String)>,
}

impl Startup {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Why a first packet was refused; each maps to PostgreSQL's own wording.
#[derive(Debug, PartialEq, Eq)]
pub enum StartupError {
    InvalidLength(i64),
    UnsupportedProtocol(u16, u16),
    Malformed(&'static str),
}

impl std::fmt::Display for StartupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartupError::InvalidLength(n) => write!(f, "invalid length of startup packet ({n})"),
            StartupError::UnsupportedProtocol(maj, min) => {
                write!(f, "unsupported frontend protocol {maj}.{min}: server supports 3.0 to 3.0")
            }
            StartupError::Malformed(what) => write!(f, "invalid startup packet layout: {what}"),
        }
    }
}

impl std::error::Error for StartupError {}

/// Validates the length prefix of a first packet (including the 4 length bytes).
pub fn check_length(len: i32) -> Result<usize, StartupError> {
    if !(8..=MAX_STARTUP_PACKET as i32).contains(&len) {
        return Err(StartupError::InvalidLength(len as i64));
    }
    Ok(len as usize)
}

/// Parses a first packet's body (everything after the length).
pub fn parse(body: &[u8]) -> Result<FirstPacket, StartupError> {
    let code = i32::from_be_bytes(body[..4].try_into().expect("length checked"));
    let rest = &body[4..];
    match code {
        SSL_REQUEST_CODE => Ok(FirstPacket::Ssl),
        GSSENC_REQUEST_CODE => Ok(FirstPacket::GssEnc),
        CANCEL_REQUEST_CODE => {
            if rest.len() < 8 {
                return Err(StartupError::Malformed("short cancel request"));
            }
            if rest.len() > 4 + MAX_CANCEL_KEY_LEN {
                return Err(StartupError::Malformed("cancel key longer than 256 bytes"));
            }
            let pid = i32::from_be_bytes(rest[..4].try_into().unwrap());
            Ok(FirstPacket::Cancel { pid, secret: rest[4..].to_vec() })
        }
        FLEET_REQUEST_CODE => Ok(FirstPacket::Fleet(rest.to_vec())),
        _ => {
            let (major, minor) = ((code >> 16) as u16, (code & 0xffff) as u16);
            if major != PROTOCOL_3 {
                return Err(StartupError::UnsupportedProtocol(major, minor));
            }
            let mut params = Vec::new();
            let mut rest = rest;
            loop {
                let (key, after) = cstr(rest).ok_or(StartupError::Malformed("missing terminator"))?;
                if key.is_empty() {
                    break;
                }
                let (value, after) = cstr(after).ok_or(StartupError::Malformed("missing value"))?;
                let key = String::from_utf8(key.to_vec()).map_err(|_| StartupError::Malformed("key is not UTF-8"))?;
                let value = String::from_utf8(value.to_vec()).map_err(|_| StartupError::Malformed("value is not UTF-8"))?;
                params.push((key, value));
                rest = after;
            }
            Ok(FirstPacket::Startup(Startup { minor_version: minor, params }))
        }
    }
}

/// Why an `options` value was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptionsError {
    /// `-c` at the end.
    NoSetting,
    /// A word that is not `-c`, `-cname=value` or `--name=value`.
    Unsupported(String),
    /// A setting without `=value`.
    NoValue(String),
}

impl std::fmt::Display for OptionsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OptionsError::NoSetting => write!(f, "option -c needs a setting"),
            OptionsError::Unsupported(w) => write!(f, "unsupported startup option \"{w}\""),
            OptionsError::NoValue(s) => write!(f, "-c {s} requires a value"),
        }
    }
}

impl std::error::Error for OptionsError {}

/// Splits a libpq `options` value (`-c a=b --c=d -cx=y`) into settings.
/// Backslash escapes a space, as in PostgreSQL's `pg_split_opts`.
pub fn split_options(options: &str) -> Result<Vec<(String, String)>, OptionsError> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => cur.extend(chars.next()),
            c if c.is_whitespace() => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    let mut out = Vec::new();
    let mut it = words.into_iter();
    while let Some(w) = it.next() {
        let setting = if w == "-c" {
            it.next().ok_or(OptionsError::NoSetting)?
        } else if let Some(s) = w.strip_prefix("--") {
            s.to_string()
        } else if let Some(s) = w.strip_prefix("-c") {
            s.to_string()
        } else {
            return Err(OptionsError::Unsupported(w));
        };
        let Some((k, v)) = setting.split_once('=') else { return Err(OptionsError::NoValue(setting)) };
        out.push((k.replace('-', "_"), v.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn startup_body(params: &[(&str, &str)]) -> Vec<u8> {
        let mut b = 196608i32.to_be_bytes().to_vec();
        for (k, v) in params {
            b.extend_from_slice(k.as_bytes());
            b.push(0);
            b.extend_from_slice(v.as_bytes());
            b.push(0);
        }
        b.push(0);
        b
    }

    #[test]
    fn parses_startup() {
        let p = parse(&startup_body(&[("user", "app"), ("database", "db")])).unwrap();
        let FirstPacket::Startup(s) = p else { panic!() };
        assert_eq!(s.get("user"), Some("app"));
        assert_eq!(s.get("database"), Some("db"));
    }

    #[test]
    fn rejects_malformed() {
        let mut b = startup_body(&[("user", "app")]);
        b.pop();
        b.pop();
        assert!(matches!(parse(&b), Err(StartupError::Malformed(_))));
        assert!(matches!(parse(&[0, 2, 0, 0]), Err(StartupError::UnsupportedProtocol(2, 0))));
        assert!(check_length(7).is_err());
        assert!(check_length(1 << 30).is_err());
    }

    #[test]
    fn special_codes() {
        assert_eq!(parse(&SSL_REQUEST_CODE.to_be_bytes()).unwrap(), FirstPacket::Ssl);
        let mut c = CANCEL_REQUEST_CODE.to_be_bytes().to_vec();
        c.extend_from_slice(&7i32.to_be_bytes());
        c.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(parse(&c).unwrap(), FirstPacket::Cancel { pid: 7, secret: vec![1, 2, 3, 4] });
    }

    #[test]
    fn options() {
        let o = split_options("-c search_path=a,b --statement-timeout=5s -cwork_mem=64kB -c x=a\\ b").unwrap();
        assert_eq!(
            o,
            vec![
                ("search_path".into(), "a,b".into()),
                ("statement_timeout".into(), "5s".into()),
                ("work_mem".into(), "64kB".into()),
                ("x".into(), "a b".into())
            ]
        );
        assert!(split_options("-x").is_err());
    }
}
