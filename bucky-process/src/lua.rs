//! The Lua processor: a Lua 5.4 function given `host, name, value, time` for each sample, with
//! the original Python processor's semantics (decisions.md §6). Returning nothing (or `nil`)
//! drops the sample; returning `host, name, value, time` forwards that; an error, or a return
//! of any other shape, is reported to the caller, which forwards the original sample unless
//! `processor_drop_on_error`.
//!
//! The script (`processor_lua`) either returns the function or defines a global function
//! named `process`. A runaway function is stopped after [`MAX_INSTRUCTIONS`] VM instructions
//! and the Lua state may use at most [`MEMORY_LIMIT`] bytes, so a script bug cannot hang the
//! pipe or grow without bound.

use std::cell::Cell;
use std::path::Path;
use std::rc::Rc;

use mlua::{Function, HookTriggers, Lua, Value, VmState};
use thiserror::Error;

/// Instructions one call may run before it is stopped with an error.
pub const MAX_INSTRUCTIONS: u64 = 100_000_000;

/// Bytes of memory the Lua state may hold.
pub const MEMORY_LIMIT: usize = 256 << 20;

/// The instruction count hook fires this often.
const HOOK_EVERY: u32 = 1_000_000;

/// Why the script could not be loaded.
#[derive(Debug, Error)]
pub enum LoadError {
    #[error("processor_lua {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("processor_lua {path}: {message}")]
    Lua { path: String, message: String },
}

/// What a call decided.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// The function returned nothing or `nil`.
    Drop,
    /// The function returned a sample.
    Forward {
        host: Returned,
        name: Returned,
        value: f64,
        timestamp: f64,
    },
}

/// What the function returned for a text field, compared with what it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Returned {
    /// The text it was given (nothing was copied).
    Same,
    /// A new text, now in the output buffer given to the call.
    New,
    /// `nil` or an empty string (a host only): the sample has no host.
    Absent,
}

/// The function loaded from a script.
pub struct LuaProcessor {
    lua: Lua,
    func: Function,
    /// Hook firings during the current call.
    ticks: Rc<Cell<u64>>,
}

impl std::fmt::Debug for LuaProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LuaProcessor")
    }
}

/// Lua error messages can span lines (tracebacks); logs take one line.
pub fn one_line(e: &mlua::Error) -> String {
    // The traceback after the first line adds nothing a script author needs in a log line.
    let text = e.to_string();
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default()
        .to_string()
}

impl LuaProcessor {
    /// Loads the script at `path`.
    pub fn load(path: &Path) -> Result<LuaProcessor, LoadError> {
        let source = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.display().to_string(),
            source,
        })?;
        LuaProcessor::from_source(&source, &path.display().to_string())
    }

    /// Loads a script from its text; `name` names it in messages.
    pub fn from_source(source: &[u8], name: &str) -> Result<LuaProcessor, LoadError> {
        let err = |message: String| LoadError::Lua {
            path: name.to_string(),
            message,
        };
        let lua = Lua::new();
        lua.set_memory_limit(MEMORY_LIMIT)
            .map_err(|e| err(one_line(&e)))?;
        let chunk = lua
            .load(source)
            .set_name(format!("@{name}"))
            .into_function()
            .map_err(|e| err(one_line(&e)))?;
        let returned: Value = chunk.call(()).map_err(|e| err(one_line(&e)))?;
        let func = match returned {
            Value::Function(f) => f,
            Value::Nil => match lua.globals().get::<Value>("process") {
                Ok(Value::Function(f)) => f,
                Ok(Value::Nil) => return Err(err(
                    "the script neither returns a function nor defines a global function `process`"
                        .into(),
                )),
                Ok(v) => {
                    return Err(err(format!(
                        "the global `process` is of type {}, not a function",
                        v.type_name()
                    )))
                }
                Err(e) => return Err(err(one_line(&e))),
            },
            v => {
                return Err(err(format!(
                    "the script returns a value of type {}, not a function",
                    v.type_name()
                )))
            }
        };
        let ticks = Rc::new(Cell::new(0u64));
        let t = ticks.clone();
        lua.set_hook(
            HookTriggers::new().every_nth_instruction(HOOK_EVERY),
            move |_, _| {
                let n = t.get() + 1;
                t.set(n);
                if n * u64::from(HOOK_EVERY) >= MAX_INSTRUCTIONS {
                    Err(mlua::Error::runtime(format!(
                        "stopped after {MAX_INSTRUCTIONS} instructions (an endless loop?)"
                    )))
                } else {
                    Ok(VmState::Continue)
                }
            },
        );
        Ok(LuaProcessor { lua, func, ticks })
    }

    /// Calls the function. A new name or host ([`Returned::New`]) is copied into `name_out` or
    /// `host_out`. `Err` is a one-line reason: the function raised an error or returned
    /// something other than nothing or the four values.
    pub fn call(
        &self,
        host: Option<&str>,
        name: &str,
        value: f64,
        timestamp: f64,
        name_out: &mut Vec<u8>,
        host_out: &mut Vec<u8>,
    ) -> Result<Verdict, String> {
        self.ticks.set(0);
        let (h, n, v, t, extra): (Value, Value, Value, Value, Value) = self
            .func
            .call((host, name, value, timestamp))
            .map_err(|e| one_line(&e))?;
        if h.is_nil() && n.is_nil() && v.is_nil() && t.is_nil() && extra.is_nil() {
            return Ok(Verdict::Drop);
        }
        if !extra.is_nil() {
            return Err("returned more than 4 values (expected host, name, value, time)".into());
        }
        let host = match &h {
            Value::Nil => Returned::Absent,
            Value::String(s) => {
                let bytes = s.as_bytes();
                if bytes.is_empty() {
                    Returned::Absent
                } else if Some(&*bytes) == host.map(str::as_bytes) {
                    Returned::Same
                } else {
                    check_field("host", &bytes)?;
                    host_out.clear();
                    host_out.extend_from_slice(&bytes);
                    Returned::New
                }
            }
            other => return Err(wrong("host", "a string or nil", other)),
        };
        let name = match &n {
            Value::String(s) => {
                let bytes = s.as_bytes();
                if *bytes == *name.as_bytes() {
                    Returned::Same
                } else {
                    if bytes.is_empty() {
                        return Err("returned an empty name".into());
                    }
                    check_field("name", &bytes)?;
                    name_out.clear();
                    name_out.extend_from_slice(&bytes);
                    Returned::New
                }
            }
            other => return Err(wrong("name", "a string", other)),
        };
        let value = number(&v).ok_or_else(|| wrong("value", "a number", &v))?;
        let timestamp = match number(&t) {
            Some(ts) if ts.is_finite() && ts >= 0.0 => ts,
            Some(ts) => return Err(format!("returned time {ts}: not a number of seconds >= 0")),
            None => return Err(wrong("time", "a number", &t)),
        };
        Ok(Verdict::Forward {
            host,
            name,
            value,
            timestamp,
        })
    }

    /// Bytes the Lua state holds now.
    pub fn used_memory(&self) -> usize {
        self.lua.used_memory()
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Integer(i) => Some(*i as f64),
        Value::Number(f) => Some(*f),
        _ => None,
    }
}

fn wrong(what: &str, expected: &str, got: &Value) -> String {
    let shown = match got {
        Value::Nil => "nil".to_string(),
        Value::Boolean(b) => format!("boolean {b}"),
        Value::String(s) => format!("string {:?}", s.to_string_lossy()),
        Value::Integer(i) => format!("integer {i}"),
        Value::Number(n) => format!("number {n}"),
        v => v.type_name().to_string(),
    };
    format!(
        "returned {shown} as the {what} (expected {expected}; return nothing to drop the sample)"
    )
}

/// A name or host must be UTF-8 without the whitespace that separates a sample line's fields.
fn check_field(what: &str, bytes: &[u8]) -> Result<(), String> {
    let text =
        std::str::from_utf8(bytes).map_err(|_| format!("returned a {what} that is not UTF-8"))?;
    if bytes
        .iter()
        .any(|c| matches!(c, b' ' | b'\t' | b'\r' | b'\n' | b'\x0b' | b'\x0c'))
    {
        return Err(format!("returned {what} {text:?}, which holds whitespace"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(src: &str) -> LuaProcessor {
        LuaProcessor::from_source(src.as_bytes(), "t.lua").unwrap()
    }

    fn call(p: &LuaProcessor, host: Option<&str>) -> (Result<Verdict, String>, String, String) {
        let (mut n, mut h) = (b"unset".to_vec(), b"unset".to_vec());
        let r = p.call(host, "a.b", 1.5, 1795650000.0, &mut n, &mut h);
        (
            r,
            String::from_utf8(n).unwrap(),
            String::from_utf8(h).unwrap(),
        )
    }

    #[test]
    fn forward_change_and_drop() {
        let p = proc(
            "return function(host, name, value, time)\n\
               if name == 'drop.me' then return end\n\
               return host, 'x.' .. name, value * 2, time + 1\n\
             end",
        );
        assert_eq!(
            call(&p, Some("h1")),
            (
                Ok(Verdict::Forward {
                    host: Returned::Same,
                    name: Returned::New,
                    value: 3.0,
                    timestamp: 1795650001.0
                }),
                "x.a.b".into(),
                "unset".into()
            )
        );
        // No host: nil in, nil out.
        let (r, _, _) = call(&p, None);
        assert!(matches!(
            r,
            Ok(Verdict::Forward {
                host: Returned::Absent,
                ..
            })
        ));
        let p2 = proc("return function(h, n, v, t) return 'other', n, v, t end");
        assert_eq!(
            call(&p2, Some("h1")),
            (
                Ok(Verdict::Forward {
                    host: Returned::New,
                    name: Returned::Same,
                    value: 1.5,
                    timestamp: 1795650000.0
                }),
                "unset".into(),
                "other".into()
            )
        );
        let (mut n, mut h) = (Vec::new(), Vec::new());
        assert_eq!(
            p.call(None, "drop.me", 1.0, 1.0, &mut n, &mut h),
            Ok(Verdict::Drop)
        );
    }

    #[test]
    fn a_global_process_function() {
        let p = proc("function process(h, n, v, t) return nil end");
        assert_eq!(call(&p, None).0, Ok(Verdict::Drop));
    }

    #[test]
    fn wrong_shapes_and_errors() {
        let cases = [
            (
                "return h, n, v",
                "returned nil as the time (expected a number",
            ),
            ("return h, n, v, t, 1", "returned more than 4 values"),
            (
                "return h, 5, v, t",
                "returned integer 5 as the name (expected a string",
            ),
            ("return h, '', v, t", "returned an empty name"),
            (
                "return h, 'a b', v, t",
                "returned name \"a b\", which holds whitespace",
            ),
            ("return 1, n, v, t", "returned integer 1 as the host"),
            ("return h, n, 'x', t", "returned string \"x\" as the value"),
            (
                "return h, n, v, -1",
                "returned time -1: not a number of seconds >= 0",
            ),
            ("return false", "returned boolean false as the host"),
            ("error('boom')", "boom"),
            ("return h, n, v, t .. 'x'", "returned string"),
            ("local x = nil; return x.y", "attempt to index"),
        ];
        for (body, want) in cases {
            let p = proc(&format!("return function(h, n, v, t) {body} end"));
            let (r, _, _) = call(&p, Some("h"));
            let e = r.unwrap_err();
            assert!(e.contains(want), "{body}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn runaway_functions_are_stopped() {
        let p = proc("return function(h, n, v, t) while true do end end");
        let e = call(&p, None).0.unwrap_err();
        assert!(e.contains("stopped after 100000000 instructions"), "{e}");
        // The budget is per call: the next call runs normally.
        let p = proc(
            "local calls = 0\n\
             return function(h, n, v, t)\n\
               calls = calls + 1\n\
               if calls == 1 then while true do end end\n\
               return h, n, v, t\n\
             end",
        );
        assert!(call(&p, None).0.is_err());
        assert!(call(&p, None).0.is_ok());
    }

    #[test]
    fn load_errors() {
        let cases = [
            (
                "return 5",
                "the script returns a value of type integer, not a function",
            ),
            (
                "x = 1",
                "neither returns a function nor defines a global function `process`",
            ),
            (
                "process = 3",
                "the global `process` is of type integer, not a function",
            ),
            ("return function(", "syntax error"),
            ("error('at load')", "at load"),
        ];
        for (src, want) in cases {
            let e = LuaProcessor::from_source(src.as_bytes(), "t.lua")
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("processor_lua t.lua: "), "{e}");
            assert!(e.contains(want), "{src}: {e}");
        }
        let e = LuaProcessor::load(Path::new("/nonexistent/x.lua")).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("processor_lua /nonexistent/x.lua: "));
    }

    #[test]
    fn memory_is_bounded() {
        let p = proc(
            "local t = {}\n\
             return function(h, n, v, ts)\n\
               for i = 1, 1e9 do t[#t + 1] = string.rep('x', 1000) .. i end\n\
             end",
        );
        let e = call(&p, None).0.unwrap_err();
        assert!(e.contains("memory") || e.contains("instructions"), "{e}");
        assert!(p.used_memory() <= MEMORY_LIMIT);
    }
}
