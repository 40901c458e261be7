//! The reader for original bucky config files: Python source restricted to literal assignments.
//!
//! The original executed its config file. We cannot, and a config that runs code could not be
//! checked anyway. Nearly every real bucky config only assigns literals, so those load
//! unchanged; anything else is refused with the line and a pointer to what to use instead.
//!
//! Two leniencies, both harmless: indented statements are accepted (so the README's indented
//! example works when pasted as it is), and so is Python 2's `10L` long suffix. `0755` is
//! refused because Python 2 and 3 read it differently.

use super::{Assignment, Value};

/// Where and why the text is not an acceptable config.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PyError {
    pub line: usize,
    pub message: String,
}

/// Deep enough for any real config; shallow enough that recursion cannot exhaust the stack.
const MAX_DEPTH: usize = 64;

/// Longest snippet of the offending source quoted in an error, in characters.
const SNIPPET_MAX: usize = 60;

const LITERALS_ONLY: &str = "a bucky config may only assign literals (numbers, strings, \
                             True/False/None, lists, tuples, dicts)";
const USE_PROCESSOR_RULES: &str = "Python functions cannot run in bucky: use processor rules \
                                   (processor_rules) or a Lua processor (processor_lua) instead";
const USE_CONVERTER_TEMPLATES: &str = "Python functions cannot run in bucky: use name templates \
                                       or Lua functions in collectd_converters instead";
const USE_OWN_PROGRAM: &str = "Python classes cannot run in bucky: pipe the sample lines a \
                               bucky tool writes into your own program instead";

const KEYWORDS: &[&str] = &[
    "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class", "continue",
    "def", "del", "elif", "else", "except", "finally", "for", "from", "global", "if", "import",
    "in", "is", "lambda", "nonlocal", "not", "or", "pass", "raise", "return", "try", "while",
    "with", "yield",
];

/// Longest first, so that the lexer can take the first match.
const OPS: &[&str] = &[
    "**=", "//=", ">>=", "<<=", "...", "!=", "%=", "&=", "**", "*=", "+=", "-=", "->", "//", "/=",
    ":=", "<<", "<=", "==", ">=", ">>", "@=", "^=", "|=", "!", "%", "&", "(", ")", "*", "+", ",",
    "-", ".", "/", ":", ";", "<", "=", ">", "@", "[", "]", "^", "{", "|", "}", "~",
];

const AUGMENTED: &[&str] = &[
    "+=", "-=", "*=", "/=", "//=", "%=", "**=", ">>=", "<<=", "&=", "^=", "|=", "@=", ":=",
];

/// Parses a whole config file.
pub(crate) fn parse(src: &str) -> Result<Vec<Assignment>, PyError> {
    let toks = lex(src);
    let mut p = Parser {
        src,
        toks,
        pos: 0,
        depth: 0,
        open: Vec::new(),
    };
    p.file()
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Name(String),
    /// The magnitude: the sign is a separate token, and `-9223372036854775808` must fit.
    Int(u64),
    Float(f64),
    Str(String),
    Op(&'static str),
    Newline,
    Eof,
    /// The lexer stops at its first error; the parser reports it when it gets there, so an
    /// earlier refusal is reported first.
    Error(String),
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    line: usize,
    start: usize,
    end: usize,
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    line: usize,
    /// Bracket depth: newlines inside brackets do not end a statement.
    brackets: usize,
    /// Where the token being read starts, past any blanks and comments before it.
    tok_start: usize,
    tok_line: usize,
    toks: Vec<Token>,
}

fn lex(src: &str) -> Vec<Token> {
    let mut lx = Lexer {
        src,
        pos: 0,
        line: 1,
        brackets: 0,
        tok_start: 0,
        tok_line: 1,
        toks: Vec::new(),
    };
    loop {
        match lx.next_token() {
            Ok(Some(tok)) => {
                let (start, line, end) = (lx.tok_start, lx.tok_line, lx.pos);
                lx.toks.push(Token {
                    tok,
                    line,
                    start,
                    end,
                });
            }
            Ok(None) => {
                let end = src.len();
                lx.toks.push(Token {
                    tok: Tok::Eof,
                    line: lx.line,
                    start: end,
                    end,
                });
                break;
            }
            Err((line, msg)) => {
                let start = lx.tok_start;
                lx.toks.push(Token {
                    tok: Tok::Error(msg),
                    line,
                    start,
                    end: start,
                });
                break;
            }
        }
    }
    lx.toks
}

fn is_ident_start(c: char) -> bool {
    c == '_' || c.is_alphabetic()
}

fn is_ident_char(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.src[self.pos..].chars().nth(n)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    fn last_is_newline(&self) -> bool {
        matches!(self.toks.last().map(|t| &t.tok), None | Some(Tok::Newline))
    }

    /// The next token, or `None` at the end of the text. Every call consumes at least one
    /// character or ends the text, so lexing always terminates.
    fn next_token(&mut self) -> Result<Option<Tok>, (usize, String)> {
        loop {
            self.tok_start = self.pos;
            self.tok_line = self.line;
            let Some(c) = self.peek() else {
                return Ok(None);
            };
            match c {
                ' ' | '\t' | '\x0c' | '\r' => {
                    self.bump();
                }
                '\n' => {
                    self.bump();
                    if self.brackets == 0 && !self.last_is_newline() {
                        return Ok(Some(Tok::Newline));
                    }
                }
                '#' => {
                    while let Some(c) = self.peek() {
                        if c == '\n' {
                            break;
                        }
                        self.bump();
                    }
                }
                '\\' => {
                    let line = self.line;
                    self.bump();
                    if self.peek() == Some('\r') {
                        self.bump();
                    }
                    if self.peek() == Some('\n') {
                        self.bump();
                    } else {
                        return Err((
                            line,
                            "invalid syntax: a '\\' outside a string must end the line".into(),
                        ));
                    }
                }
                '0'..='9' => return self.number().map(Some),
                '.' if self.peek_at(1).is_some_and(|d| d.is_ascii_digit()) => {
                    return self.number().map(Some)
                }
                '\'' | '"' => return self.string("").map(Some),
                c if is_ident_start(c) => {
                    let start = self.pos;
                    while self.peek().is_some_and(is_ident_char) {
                        self.bump();
                    }
                    let src = self.src;
                    let word = &src[start..self.pos];
                    let is_prefix = matches!(
                        word.to_ascii_lowercase().as_str(),
                        "r" | "u" | "b" | "f" | "br" | "rb" | "fr" | "rf"
                    );
                    if is_prefix && matches!(self.peek(), Some('\'' | '"')) {
                        return self.string(word).map(Some);
                    }
                    return Ok(Some(Tok::Name(word.to_string())));
                }
                _ => {
                    let rest = &self.src[self.pos..];
                    if let Some(op) = OPS.iter().find(|op| rest.starts_with(**op)) {
                        self.pos += op.len();
                        match *op {
                            "(" | "[" | "{" => self.brackets += 1,
                            ")" | "]" | "}" => self.brackets = self.brackets.saturating_sub(1),
                            _ => {}
                        }
                        return Ok(Some(Tok::Op(op)));
                    }
                    return Err((
                        self.line,
                        format!("invalid syntax: unexpected character {c:?}"),
                    ));
                }
            }
        }
    }

    fn number(&mut self) -> Result<Tok, (usize, String)> {
        let line = self.line;
        let start = self.pos;
        let radix = match (self.peek(), self.peek_at(1)) {
            (Some('0'), Some('x' | 'X')) => 16,
            (Some('0'), Some('o' | 'O')) => 8,
            (Some('0'), Some('b' | 'B')) => 2,
            _ => 10,
        };
        let mut is_float = false;
        if radix != 10 {
            self.bump();
            self.bump();
            while self
                .peek()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                self.bump();
            }
        } else {
            self.digits();
            if self.peek() == Some('.') {
                is_float = true;
                self.bump();
                self.digits();
            }
            if matches!(self.peek(), Some('e' | 'E')) {
                let sign = matches!(self.peek_at(1), Some('+' | '-'));
                let digit_at = if sign { 2 } else { 1 };
                if self.peek_at(digit_at).is_some_and(|c| c.is_ascii_digit()) {
                    is_float = true;
                    self.bump();
                    if sign {
                        self.bump();
                    }
                    self.digits();
                }
            }
        }
        let src = self.src;
        let text = &src[start..self.pos];
        let bad = |why: &str| Err((line, format!("invalid number '{text}': {why}")));
        if matches!(self.peek(), Some('j' | 'J')) {
            self.bump();
            return Err((
                line,
                format!("'{text}j' is not supported: complex numbers are not config values"),
            ));
        }
        // Python 2's long suffix: harmless, and old configs may carry it.
        let long_suffix = !is_float && matches!(self.peek(), Some('l' | 'L'));
        if long_suffix {
            self.bump();
        }
        if self.peek().is_some_and(is_ident_char) {
            while self.peek().is_some_and(is_ident_char) {
                self.bump();
            }
            let text = &src[start..self.pos];
            return Err((line, format!("invalid number '{text}'")));
        }
        if text.contains("__") || text.ends_with('_') || text.contains("_.") || text.contains("._")
        {
            return bad("misplaced '_'");
        }
        let clean: String = text.chars().filter(|c| *c != '_').collect();
        if is_float {
            return match clean.parse::<f64>() {
                Ok(f) => Ok(Tok::Float(f)),
                Err(_) => bad("not a number"),
            };
        }
        let digits = if radix == 10 { &clean[..] } else { &clean[2..] };
        if digits.is_empty() {
            return bad("no digits");
        }
        if radix == 10 && digits.len() > 1 && digits.starts_with('0') {
            if digits.bytes().all(|b| b == b'0') {
                return Ok(Tok::Int(0));
            }
            return Err((
                line,
                format!(
                    "'{text}' is ambiguous: write 0o{} for an octal number or {} for a decimal \
                     one",
                    digits.trim_start_matches('0'),
                    digits.trim_start_matches('0')
                ),
            ));
        }
        match u64::from_str_radix(digits, radix) {
            Ok(n) => Ok(Tok::Int(n)),
            Err(e) => match e.kind() {
                std::num::IntErrorKind::PosOverflow => bad("too large for a 64-bit integer"),
                _ => bad("invalid digit"),
            },
        }
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_digit() || c == '_') {
            self.bump();
        }
    }

    /// A string literal; the cursor is on the opening quote, `prefix` already consumed.
    fn string(&mut self, prefix: &str) -> Result<Tok, (usize, String)> {
        let line = self.line;
        let p = prefix.to_ascii_lowercase();
        if p.contains('f') {
            return Err((
                line,
                "f-strings are not supported: a bucky config may only assign literals; use a \
                 plain string"
                    .into(),
            ));
        }
        let raw = p.contains('r');
        let bytes = p.contains('b');
        let Some(quote) = self.bump() else {
            return Err((line, "invalid syntax: expected a string".into()));
        };
        let triple = self.peek() == Some(quote) && self.peek_at(1) == Some(quote);
        if triple {
            self.bump();
            self.bump();
        }
        let unterminated = || Err((line, "invalid syntax: unterminated string".to_string()));
        let mut buf: Vec<u8> = Vec::new();
        let push_char = |buf: &mut Vec<u8>, c: char| {
            let mut tmp = [0u8; 4];
            buf.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
        };
        loop {
            let Some(c) = self.peek() else {
                return unterminated();
            };
            if c == quote {
                if !triple {
                    self.bump();
                    break;
                }
                if self.peek_at(1) == Some(quote) && self.peek_at(2) == Some(quote) {
                    self.bump();
                    self.bump();
                    self.bump();
                    break;
                }
            }
            if c == '\n' && !triple {
                return unterminated();
            }
            self.bump();
            if bytes && !c.is_ascii() {
                return Err((
                    self.line,
                    "a bytes literal (b'...') may only hold ASCII characters".into(),
                ));
            }
            if c != '\\' {
                push_char(&mut buf, c);
                continue;
            }
            let Some(e) = self.bump() else {
                return unterminated();
            };
            if raw {
                // A raw string keeps the backslash, but it still escapes the quote.
                push_char(&mut buf, '\\');
                push_char(&mut buf, e);
                continue;
            }
            let simple = match e {
                '\n' => Some(None),
                '\\' => Some(Some('\\')),
                '\'' => Some(Some('\'')),
                '"' => Some(Some('"')),
                'a' => Some(Some('\x07')),
                'b' => Some(Some('\x08')),
                'f' => Some(Some('\x0c')),
                'n' => Some(Some('\n')),
                'r' => Some(Some('\r')),
                't' => Some(Some('\t')),
                'v' => Some(Some('\x0b')),
                _ => None,
            };
            if let Some(ch) = simple {
                if let Some(ch) = ch {
                    push_char(&mut buf, ch);
                }
                continue;
            }
            match e {
                '\r' if self.peek() == Some('\n') => {
                    self.bump();
                }
                '0'..='7' => {
                    let mut n = e.to_digit(8).unwrap_or(0);
                    for _ in 0..2 {
                        match self.peek().and_then(|d| d.to_digit(8)) {
                            Some(d) => {
                                n = n * 8 + d;
                                self.bump();
                            }
                            None => break,
                        }
                    }
                    self.push_code(&mut buf, n, bytes, line)?;
                }
                'x' => {
                    let n = self.hex_digits(2, line, "\\xXX")?;
                    self.push_code(&mut buf, n, bytes, line)?;
                }
                'u' | 'U' if !bytes => {
                    let n = if e == 'u' {
                        self.hex_digits(4, line, "\\uXXXX")?
                    } else {
                        self.hex_digits(8, line, "\\UXXXXXXXX")?
                    };
                    self.push_code(&mut buf, n, false, line)?;
                }
                'N' if !bytes => {
                    return Err((
                        line,
                        "\\N{...} escapes are not supported: write the character itself or \
                         use \\uXXXX"
                            .into(),
                    ));
                }
                other => {
                    // Python keeps unknown escapes as they are.
                    push_char(&mut buf, '\\');
                    push_char(&mut buf, other);
                }
            }
        }
        match String::from_utf8(buf) {
            Ok(s) => Ok(Tok::Str(s)),
            Err(_) => Err((
                line,
                "this bytes literal is not valid UTF-8 text: use a plain string".into(),
            )),
        }
    }

    fn hex_digits(&mut self, n: usize, line: usize, form: &str) -> Result<u32, (usize, String)> {
        let mut v: u32 = 0;
        for _ in 0..n {
            match self.peek().and_then(|d| d.to_digit(16)) {
                Some(d) => {
                    v = v.wrapping_mul(16).wrapping_add(d);
                    self.bump();
                }
                None => return Err((line, format!("truncated {form} escape in a string"))),
            }
        }
        Ok(v)
    }

    fn push_code(
        &self,
        buf: &mut Vec<u8>,
        n: u32,
        bytes: bool,
        line: usize,
    ) -> Result<(), (usize, String)> {
        if bytes {
            match u8::try_from(n) {
                Ok(b) => buf.push(b),
                Err(_) => return Err((line, format!("escape value {n} is too large for bytes"))),
            }
            return Ok(());
        }
        match char::from_u32(n) {
            Some(c) => {
                let mut tmp = [0u8; 4];
                buf.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
                Ok(())
            }
            None => Err((
                line,
                format!("escape \\U{n:08x} in a string is not a Unicode character"),
            )),
        }
    }
}

/// What the assignment is for, which decides what to suggest instead of Python code.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ctx {
    Plain,
    Processor,
    Converters,
    Clients,
}

impl Ctx {
    fn of(key: &str) -> Ctx {
        match key {
            "processor" => Ctx::Processor,
            "collectd_converters" => Ctx::Converters,
            "custom_clients" => Ctx::Clients,
            _ => Ctx::Plain,
        }
    }

    fn code_alternative(self) -> &'static str {
        match self {
            Ctx::Plain | Ctx::Processor => USE_PROCESSOR_RULES,
            Ctx::Converters => USE_CONVERTER_TEMPLATES,
            Ctx::Clients => USE_OWN_PROGRAM,
        }
    }

    fn name_alternative(self) -> &'static str {
        match self {
            Ctx::Plain => LITERALS_ONLY,
            _ => self.code_alternative(),
        }
    }
}

/// How far a quoted snippet of source runs.
#[derive(Clone, Copy, PartialEq)]
enum Extent {
    /// To the end of the statement.
    Statement,
    /// To the end of the expression: a `,`, `:` or closing bracket at its own depth.
    Expression,
    /// Like `Expression`, but a lambda's own `:` does not end it.
    Lambda,
}

struct Parser<'a> {
    src: &'a str,
    toks: Vec<Token>,
    pos: usize,
    depth: usize,
    /// Open brackets and their lines, to say which one is never closed.
    open: Vec<(&'static str, usize)>,
}

fn err<T>(line: usize, message: impl Into<String>) -> Result<T, PyError> {
    Err(PyError {
        line,
        message: message.into(),
    })
}

fn describe(tok: &Tok) -> String {
    match tok {
        Tok::Name(n) => format!("'{n}'"),
        Tok::Int(_) | Tok::Float(_) => "a number".into(),
        Tok::Str(_) => "a string".into(),
        Tok::Op(op) => format!("'{op}'"),
        Tok::Newline => "the end of the line".into(),
        Tok::Eof => "the end of the file".into(),
        Tok::Error(m) => m.clone(),
    }
}

impl Parser<'_> {
    fn tok_at(&self, i: usize) -> &Token {
        // The token list always ends with Eof or Error, and the cursor never passes it.
        let last = self.toks.len().saturating_sub(1);
        &self.toks[i.min(last)]
    }

    fn peek(&self) -> &Tok {
        &self.tok_at(self.pos).tok
    }

    fn peek2(&self) -> &Tok {
        &self.tok_at(self.pos + 1).tok
    }

    fn line(&self) -> usize {
        self.tok_at(self.pos).line
    }

    fn advance(&mut self) {
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
    }

    fn is_op(&self, op: &str) -> bool {
        matches!(self.peek(), Tok::Op(o) if *o == op)
    }

    fn file(&mut self) -> Result<Vec<Assignment>, PyError> {
        let mut out = Vec::new();
        loop {
            match self.peek() {
                Tok::Eof => return Ok(out),
                Tok::Newline => self.advance(),
                _ => {
                    self.statement(&mut out)?;
                    // `a = 1; b = 2` and a trailing `;` are both Python.
                    while self.is_op(";") {
                        self.advance();
                        if matches!(self.peek(), Tok::Newline | Tok::Eof) {
                            break;
                        }
                        self.statement(&mut out)?;
                    }
                    match self.peek() {
                        Tok::Newline | Tok::Eof => {}
                        _ => return self.unexpected(),
                    }
                }
            }
        }
    }

    fn unexpected<T>(&self) -> Result<T, PyError> {
        let t = self.tok_at(self.pos);
        match &t.tok {
            Tok::Error(m) => err(t.line, m.clone()),
            Tok::Eof => self.unexpected_eof(),
            other => err(
                t.line,
                format!("invalid syntax: unexpected {}", describe(other)),
            ),
        }
    }

    fn unexpected_eof<T>(&self) -> Result<T, PyError> {
        match self.open.last() {
            Some((br, line)) => err(*line, format!("invalid syntax: '{br}' is never closed")),
            None => err(self.line(), "invalid syntax: unexpected end of file"),
        }
    }

    fn statement(&mut self, out: &mut Vec<Assignment>) -> Result<(), PyError> {
        let start = self.pos;
        let line = self.line();
        let first = self.peek().clone();
        match &first {
            Tok::Error(m) => return err(line, m.clone()),
            Tok::Name(n) if KEYWORDS.contains(&n.as_str()) => {
                let why = match n.as_str() {
                    "def" | "lambda" | "async" => USE_PROCESSOR_RULES,
                    "class" => USE_OWN_PROGRAM,
                    _ => LITERALS_ONLY,
                };
                return self.refuse(start, Extent::Statement, "is not supported", why);
            }
            Tok::Op("@") => {
                return self.refuse(
                    start,
                    Extent::Statement,
                    "is not supported",
                    USE_PROCESSOR_RULES,
                )
            }
            Tok::Name(_) => {}
            // A docstring (or any lone string) does nothing in Python, so it may stay.
            Tok::Str(_) => {
                while matches!(self.peek(), Tok::Str(_)) {
                    self.advance();
                }
                if matches!(self.peek(), Tok::Newline | Tok::Eof | Tok::Op(";")) {
                    return Ok(());
                }
                return self.refuse(start, Extent::Statement, "is not supported", LITERALS_ONLY);
            }
            _ => return self.refuse(start, Extent::Statement, "is not supported", LITERALS_ONLY),
        }
        let mut targets = Vec::new();
        while let (Tok::Name(n), Tok::Op("=")) = (self.peek(), self.peek2()) {
            if KEYWORDS.contains(&n.as_str()) {
                break;
            }
            targets.push((n.clone(), self.line()));
            self.advance();
            self.advance();
        }
        if targets.is_empty() {
            if matches!(self.peek2(), Tok::Op(op) if AUGMENTED.contains(op)) {
                let why = format!("write the final value with '=' instead; {LITERALS_ONLY}");
                return self.refuse(start, Extent::Statement, "is not supported", &why);
            }
            // A name not followed by `=`: `x: int = 1`, `print(x)`, `os.x = 1`...
            return self.refuse(start, Extent::Statement, "is not supported", LITERALS_ONLY);
        }
        let ctx = targets
            .iter()
            .map(|(k, _)| Ctx::of(k))
            .find(|c| *c != Ctx::Plain)
            .unwrap_or(Ctx::Plain);
        let value = self.value_list(ctx)?;
        for (key, line) in targets {
            out.push(Assignment {
                key,
                value: value.clone(),
                line,
            });
        }
        Ok(())
    }

    /// `1, 2` after `=` is a tuple, as in Python.
    fn value_list(&mut self, ctx: Ctx) -> Result<Value, PyError> {
        let first = self.value(ctx)?;
        if !self.is_op(",") {
            return Ok(first);
        }
        let mut items = vec![first];
        while self.is_op(",") {
            self.advance();
            if matches!(self.peek(), Tok::Newline | Tok::Eof | Tok::Op(";")) {
                break;
            }
            items.push(self.value(ctx)?);
        }
        Ok(Value::Tuple(items))
    }

    fn value(&mut self, ctx: Ctx) -> Result<Value, PyError> {
        if self.depth >= MAX_DEPTH {
            return err(
                self.line(),
                format!("values are nested more than {MAX_DEPTH} deep"),
            );
        }
        self.depth += 1;
        let r = self.value_inner(ctx);
        self.depth -= 1;
        r
    }

    fn value_inner(&mut self, ctx: Ctx) -> Result<Value, PyError> {
        let start = self.pos;
        let v = self.atom(ctx)?;
        let ends = matches!(
            self.peek(),
            Tok::Op("," | ")" | "]" | "}" | ":" | ";") | Tok::Newline | Tok::Eof | Tok::Error(_)
        );
        if ends {
            return Ok(v);
        }
        // Inside brackets, a value followed by something on a later line most likely means a
        // missing comma or bracket, not an expression.
        let prev_line = self.tok_at(self.pos.saturating_sub(1)).line;
        if let Some((br, open_line)) = self.open.last() {
            if self.line() > prev_line && !matches!(self.peek(), Tok::Op(_)) {
                return err(
                    self.line(),
                    format!(
                        "invalid syntax: expected ',' or a closing bracket for the '{br}' of line \
                         {open_line}, found {}",
                        describe(self.peek())
                    ),
                );
            }
        }
        self.refuse(
            start,
            Extent::Expression,
            "is not a literal",
            ctx.name_alternative(),
        )
    }

    fn atom(&mut self, ctx: Ctx) -> Result<Value, PyError> {
        let start = self.pos;
        let line = self.line();
        let tok = self.peek().clone();
        match tok {
            Tok::Int(n) => {
                self.advance();
                match i64::try_from(n) {
                    Ok(i) => Ok(Value::Int(i)),
                    Err(_) => err(line, format!("{n} is too large for a 64-bit integer")),
                }
            }
            Tok::Float(f) => {
                self.advance();
                Ok(Value::Float(f))
            }
            Tok::Op(sign @ ("-" | "+")) => {
                self.advance();
                let neg = sign == "-";
                match self.peek().clone() {
                    Tok::Int(n) => {
                        self.advance();
                        let v = if neg { -i128::from(n) } else { i128::from(n) };
                        match i64::try_from(v) {
                            Ok(i) => Ok(Value::Int(i)),
                            Err(_) => err(line, format!("{v} does not fit a 64-bit integer")),
                        }
                    }
                    Tok::Float(f) => {
                        self.advance();
                        Ok(Value::Float(if neg { -f } else { f }))
                    }
                    _ => self.refuse(start, Extent::Expression, "is not a literal", LITERALS_ONLY),
                }
            }
            Tok::Str(s) => {
                self.advance();
                let mut s = s;
                // Adjacent literals concatenate, as in Python.
                while let Tok::Str(more) = self.peek() {
                    s.push_str(more);
                    self.advance();
                }
                Ok(Value::Str(s))
            }
            Tok::Name(n) => match n.as_str() {
                "True" => {
                    self.advance();
                    Ok(Value::Bool(true))
                }
                "False" => {
                    self.advance();
                    Ok(Value::Bool(false))
                }
                "None" => {
                    self.advance();
                    Ok(Value::None)
                }
                "lambda" => self.refuse(
                    start,
                    Extent::Lambda,
                    "is not supported",
                    ctx.code_alternative(),
                ),
                other => {
                    let spelled = match other.to_ascii_lowercase().as_str() {
                        "true" => Some("True"),
                        "false" => Some("False"),
                        "none" | "null" | "nil" => Some("None"),
                        _ => None,
                    };
                    match (spelled, ctx) {
                        (Some(word), Ctx::Plain) => self.refuse(
                            start,
                            Extent::Expression,
                            "is not a literal",
                            &format!("Python spells it {word}"),
                        ),
                        _ => self.refuse(
                            start,
                            Extent::Expression,
                            "is not a literal",
                            ctx.name_alternative(),
                        ),
                    }
                }
            },
            Tok::Op("(") => {
                let items = self.bracketed("(", ")", ctx)?;
                match items {
                    Bracketed::Single(v) => Ok(v),
                    Bracketed::Items(v) => Ok(Value::Tuple(v)),
                }
            }
            Tok::Op("[") => match self.bracketed("[", "]", ctx)? {
                Bracketed::Single(v) => Ok(Value::List(vec![v])),
                Bracketed::Items(v) => Ok(Value::List(v)),
            },
            Tok::Op("{") => self.dict(ctx),
            Tok::Error(m) => err(line, m),
            Tok::Eof => self.unexpected_eof(),
            Tok::Newline => err(
                line,
                "invalid syntax: expected a value before the end of the line",
            ),
            Tok::Op(o @ (")" | "]" | "}" | "," | ":" | ";" | "=")) => err(
                line,
                format!("invalid syntax: expected a value, found '{o}'"),
            ),
            Tok::Op(_) => self.refuse(start, Extent::Expression, "is not a literal", LITERALS_ONLY),
        }
    }

    fn open_bracket(&mut self, br: &'static str) {
        self.open.push((br, self.line()));
        self.advance();
    }

    fn close_bracket(&mut self, close: &'static str) -> Result<(), PyError> {
        if self.is_op(close) {
            self.open.pop();
            self.advance();
            return Ok(());
        }
        if matches!(self.peek(), Tok::Eof) {
            return self.unexpected_eof();
        }
        if let Tok::Error(m) = self.peek() {
            return err(self.line(), m.clone());
        }
        let (br, line) = self.open.last().copied().unwrap_or(("(", 0));
        err(
            self.line(),
            format!(
                "invalid syntax: expected ',' or '{close}' to close the '{br}' of line {line}, \
                 found {}",
                describe(self.peek())
            ),
        )
    }

    /// `(...)` or `[...]`. `Single` is one value without a comma: `(x)` is just `x`, `(x,)`
    /// a one-tuple.
    fn bracketed(
        &mut self,
        open: &'static str,
        close: &'static str,
        ctx: Ctx,
    ) -> Result<Bracketed, PyError> {
        self.open_bracket(open);
        let mut items = Vec::new();
        let mut comma = false;
        loop {
            if self.is_op(close) {
                break;
            }
            items.push(self.value(ctx)?);
            if self.is_op(",") {
                comma = true;
                self.advance();
            } else {
                break;
            }
        }
        self.close_bracket(close)?;
        if items.len() == 1 && !comma {
            if let Some(v) = items.pop() {
                return Ok(Bracketed::Single(v));
            }
        }
        Ok(Bracketed::Items(items))
    }

    fn dict(&mut self, ctx: Ctx) -> Result<Value, PyError> {
        self.open_bracket("{");
        let mut entries: Vec<(Value, Value)> = Vec::new();
        loop {
            if self.is_op("}") {
                break;
            }
            let key_line = self.line();
            let key = self.value(ctx)?;
            if !self.is_op(":") {
                if self.is_op(",") || self.is_op("}") {
                    return err(
                        key_line,
                        "sets ({a, b}) are not supported: use a list ([a, b]) instead",
                    );
                }
                self.close_bracket("}")?;
                return self.unexpected();
            }
            if !hashable(&key) {
                return err(
                    key_line,
                    "a dict key must be a number, a string, True/False/None or a tuple of those",
                );
            }
            self.advance();
            let value = self.value(ctx)?;
            // A repeated key keeps its first place and takes the last value, as in Python.
            match entries.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = value,
                None => entries.push((key, value)),
            }
            if self.is_op(",") {
                self.advance();
            } else {
                break;
            }
        }
        self.close_bracket("}")?;
        Ok(Value::Dict(entries))
    }

    /// The tokens (first and last index) quoted for a refusal starting at token `from`.
    fn extent(&self, from: usize, kind: Extent) -> (usize, usize) {
        let mut depth = 0usize;
        let mut lambda_colon = kind == Extent::Lambda;
        let mut i = from;
        let mut last = from;
        loop {
            let t = self.tok_at(i);
            let stop = match &t.tok {
                Tok::Eof | Tok::Error(_) | Tok::Newline => true,
                Tok::Op(";") => depth == 0,
                Tok::Op("(" | "[" | "{") => {
                    depth += 1;
                    false
                }
                Tok::Op(")" | "]" | "}") => {
                    if depth == 0 {
                        kind != Extent::Statement
                    } else {
                        depth -= 1;
                        false
                    }
                }
                // A lambda's parameters are separated by commas before its colon.
                Tok::Op(",") => depth == 0 && kind != Extent::Statement && !lambda_colon,
                Tok::Op(":") if depth == 0 && kind != Extent::Statement => {
                    // The first colon after `lambda` is its own; the next one ends it.
                    !std::mem::take(&mut lambda_colon)
                }
                _ => false,
            };
            if stop || i + 1 >= self.toks.len() {
                break;
            }
            last = i;
            i += 1;
        }
        (from, last)
    }

    /// The source of tokens `from..=to`, comments left out and whitespace collapsed.
    fn snippet(&self, from: usize, to: usize) -> String {
        let mut s = String::new();
        let mut prev_end: Option<usize> = None;
        for i in from..=to.min(self.toks.len().saturating_sub(1)) {
            let t = self.tok_at(i);
            if matches!(t.tok, Tok::Eof | Tok::Error(_) | Tok::Newline) {
                break;
            }
            if prev_end.is_some_and(|e| e < t.start) {
                s.push(' ');
            }
            s.push_str(self.src.get(t.start..t.end).unwrap_or(""));
            prev_end = Some(t.end);
        }
        let s: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
        if s.chars().count() > SNIPPET_MAX {
            let cut: String = s.chars().take(SNIPPET_MAX).collect();
            format!("{cut}...")
        } else {
            s
        }
    }

    fn refuse<T>(
        &self,
        from: usize,
        kind: Extent,
        what: &str,
        alternative: &str,
    ) -> Result<T, PyError> {
        let (a, b) = self.extent(from, kind);
        let line = self.tok_at(from).line;
        if let Tok::Error(m) = &self.tok_at(from).tok {
            return err(line, m.clone());
        }
        err(
            line,
            format!("'{}' {what}: {alternative}", self.snippet(a, b)),
        )
    }
}

enum Bracketed {
    Single(Value),
    Items(Vec<Value>),
}

fn hashable(v: &Value) -> bool {
    match v {
        Value::List(_) | Value::Dict(_) => false,
        Value::Tuple(items) => items.iter().all(hashable),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn one(src: &str) -> Value {
        let a = parse(&format!("x = {src}\n")).unwrap_or_else(|e| panic!("{src}: {e:?}"));
        assert_eq!(a.len(), 1, "{src}");
        a[0].value.clone()
    }

    fn s(x: &str) -> Value {
        Value::Str(x.into())
    }

    #[test]
    fn literal_forms() {
        use Value::*;
        let table: Vec<(&str, Value)> = vec![
            ("0", Int(0)),
            ("00", Int(0)),
            ("42", Int(42)),
            ("-42", Int(-42)),
            ("+7", Int(7)),
            ("- 3", Int(-3)),
            ("1_000_000", Int(1_000_000)),
            ("0x1F", Int(31)),
            ("0XfF", Int(255)),
            ("-0x10", Int(-16)),
            ("0o755", Int(493)),
            ("0b101", Int(5)),
            ("10L", Int(10)),
            ("9223372036854775807", Int(i64::MAX)),
            ("-9223372036854775808", Int(i64::MIN)),
            ("1.5", Float(1.5)),
            ("10.0", Float(10.0)),
            ("1.", Float(1.0)),
            (".5", Float(0.5)),
            ("-.5", Float(-0.5)),
            ("1e3", Float(1000.0)),
            ("1E-3", Float(0.001)),
            ("2.5e+2", Float(250.0)),
            ("1.e2", Float(100.0)),
            ("1_0.5", Float(10.5)),
            ("True", Bool(true)),
            ("False", Bool(false)),
            ("None", None),
            ("'a'", s("a")),
            ("\"a\"", s("a")),
            ("''", s("")),
            ("'it\\'s'", s("it's")),
            ("\"say \\\"hi\\\"\"", s("say \"hi\"")),
            ("'tab\\there'", s("tab\there")),
            ("'\\n\\r\\\\'", s("\n\r\\")),
            ("'\\x41\\101\\u00e9\\U0001F600'", s("AAé😀")),
            ("'\\q'", s("\\q")),
            ("'é'", s("é")),
            ("r'\\d+\\.\\w'", s("\\d+\\.\\w")),
            ("R\"\\n\"", s("\\n")),
            ("r'\\''", s("\\'")),
            ("u'unicode'", s("unicode")),
            ("b'bytes\\x41'", s("bytesA")),
            ("br'\\x41'", s("\\x41")),
            ("'''tri\nple'''", s("tri\nple")),
            ("\"\"\"a \"quoted\" b\"\"\"", s("a \"quoted\" b")),
            ("'''a\\\nb'''", s("ab")),
            ("'a' 'b'", s("ab")),
            ("'a' \"b\" r'\\c'", s("ab\\c")),
            ("('a'\n 'b')", s("ab")),
            ("[]", List(vec![])),
            ("[1, 2,]", List(vec![Int(1), Int(2)])),
            (
                "[1, [2, []]]",
                List(vec![Int(1), List(vec![Int(2), List(vec![])])]),
            ),
            ("()", Tuple(vec![])),
            ("(1,)", Tuple(vec![Int(1)])),
            ("(1)", Int(1)),
            ("((('x')))", s("x")),
            ("(1, 'a', None)", Tuple(vec![Int(1), s("a"), None])),
            ("1, 2", Tuple(vec![Int(1), Int(2)])),
            ("1,", Tuple(vec![Int(1)])),
            ("{}", Dict(vec![])),
            (
                "{'a': 1, 2: [3], (4, 5): None,}",
                Dict(vec![
                    (s("a"), Int(1)),
                    (Int(2), List(vec![Int(3)])),
                    (Tuple(vec![Int(4), Int(5)]), None),
                ]),
            ),
            (
                "{'a': 1, 'b': 2, 'a': 3}",
                Dict(vec![(s("a"), Int(3)), (s("b"), Int(2))]),
            ),
            (
                "[\n  ('^foo', 10.0),  # a comment\n\n  ('^bar', 60, 2),\n]",
                List(vec![
                    Tuple(vec![s("^foo"), Float(10.0)]),
                    Tuple(vec![s("^bar"), Int(60), Int(2)]),
                ]),
            ),
            ("[1,\\\n 2]", List(vec![Int(1), Int(2)])),
        ];
        for (src, want) in table {
            assert_eq!(one(src), want, "{src}");
        }
    }

    #[test]
    fn statements() {
        let a = parse(
            "# header\n\na = 1; b = 'x';\nc = \\\n  [1,\n 2]\n\nd = e = None\na = 2  # again\n",
        )
        .unwrap();
        let got: Vec<(&str, &Value, usize)> = a
            .iter()
            .map(|x| (x.key.as_str(), &x.value, x.line))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a", &Value::Int(1), 3),
                ("b", &s("x"), 3),
                ("c", &Value::List(vec![Value::Int(1), Value::Int(2)]), 4),
                ("d", &Value::None, 8),
                ("e", &Value::None, 8),
                ("a", &Value::Int(2), 9),
            ]
        );
        assert_eq!(parse("").unwrap(), vec![]);
        assert_eq!(parse("\n\n# only a comment").unwrap(), vec![]);
        assert_eq!(parse("x = 1").unwrap().len(), 1);
        assert_eq!(parse("x = 1\r\ny = 2\r\n").unwrap().len(), 2);
        // A module docstring is harmless.
        assert_eq!(
            parse("\"\"\"bucky config\n\"\"\"\nx = 1\n").unwrap().len(),
            1
        );
        // Indented statements (a pasted README block) are accepted.
        assert_eq!(parse("    x = 1\n    y = 2\n").unwrap().len(), 2);
    }

    fn refusal(src: &str) -> PyError {
        match parse(src) {
            Ok(v) => panic!("accepted {src:?}: {v:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn refusals_name_the_line_and_the_alternative() {
        let cases: &[(&str, usize, &str)] = &[
            (
                "a = 1\n\nimport time\n",
                3,
                "'import time' is not supported: a bucky config may only assign literals \
                 (numbers, strings, True/False/None, lists, tuples, dicts)",
            ),
            (
                "from os import path\n",
                1,
                "'from os import path' is not supported: a bucky",
            ),
            (
                "def timediff(host, name, val, time):\n    return None\n",
                1,
                "'def timediff(host, name, val, time):' is not supported: Python functions \
                 cannot run in bucky: use processor rules (processor_rules) or a Lua processor \
                 (processor_lua) instead",
            ),
            (
                "@decorator\ndef f(): pass\n",
                1,
                "Python functions cannot run in bucky",
            ),
            (
                "class C(object):\n    pass\n",
                1,
                "'class C(object):' is not supported: Python classes",
            ),
            (
                "x = 1\nprocessor = lambda host, name, val, time: None\n",
                2,
                "'lambda host, name, val, time: None' is not supported: Python functions cannot \
                 run in bucky: use processor rules (processor_rules) or a Lua processor",
            ),
            (
                "processor = timediff\n",
                1,
                "'timediff' is not a literal: Python functions cannot run in bucky: use \
                 processor rules (processor_rules) or a Lua processor (processor_lua) instead",
            ),
            (
                "collectd_converters = {\n    'cpu': my_cpu,\n}\n",
                2,
                "'my_cpu' is not a literal: Python functions cannot run in bucky: use name \
                 templates or Lua functions in collectd_converters instead",
            ),
            (
                "collectd_converters = {'cpu': lambda s: s}\n",
                1,
                "'lambda s: s' is not supported: Python functions cannot run in bucky: use name \
                 templates or Lua functions in collectd_converters instead",
            ),
            (
                "custom_clients = [MyClient]\n",
                1,
                "'MyClient' is not a literal: Python classes",
            ),
            (
                "x = time.time()\n",
                1,
                "'time.time()' is not a literal: a bucky config may only",
            ),
            (
                "x = int('5')\n",
                1,
                "'int('5')' is not a literal: a bucky config may only",
            ),
            (
                "print('hi')\n",
                1,
                "'print('hi')' is not supported: a bucky config may only",
            ),
            (
                "graphite_port = statsd_port\n",
                1,
                "'statsd_port' is not a literal: a bucky",
            ),
            ("x = os.environ\n", 1, "'os.environ' is not a literal"),
            (
                "x = 1 + 2\n",
                1,
                "'1 + 2' is not a literal: a bucky config may only assign",
            ),
            ("x = [1,\n  2 * 3]\n", 2, "'2 * 3' is not a literal"),
            ("x = -2 ** 2\n", 1, "'-2 ** 2' is not a literal"),
            ("x = 'a' + 'b'\n", 1, "''a' + 'b'' is not a literal"),
            ("x = 'a' % 3\n", 1, "is not a literal"),
            ("x = not True\n", 1, "'not True' is not a literal"),
            (
                "x = 1 if True else 2\n",
                1,
                "'1 if True else 2' is not a literal",
            ),
            (
                "x = [i for i in range(3)]\n",
                1,
                "'i for i in range(3)' is not a literal",
            ),
            ("x = -True\n", 1, "'-True' is not a literal"),
            (
                "x = 1\nx += 1\n",
                2,
                "'x += 1' is not supported: write the final value with '='",
            ),
            ("x: int = 1\n", 1, "'x: int = 1' is not supported"),
            (
                "os.environ['X'] = '1'\n",
                1,
                "is not supported: a bucky config may only",
            ),
            ("if debug:\n    x = 1\n", 1, "'if debug:' is not supported"),
            (
                "for i in []:\n    pass\n",
                1,
                "'for i in []:' is not supported",
            ),
            (
                "with open('f') as f:\n  pass\n",
                1,
                "'with open('f') as f:' is not supported",
            ),
            (
                "debug = true\n",
                1,
                "'true' is not a literal: Python spells it True",
            ),
            (
                "x = null\n",
                1,
                "'null' is not a literal: Python spells it None",
            ),
            (
                "x = {1, 2}\n",
                1,
                "sets ({a, b}) are not supported: use a list",
            ),
            ("x = {[1]: 2}\n", 1, "a dict key must be"),
            ("x = f'{y}'\n", 1, "f-strings are not supported"),
            ("x = 1j\n", 1, "complex numbers"),
            ("x = 0755\n", 1, "'0755' is ambiguous: write 0o755"),
            (
                "x = 99999999999999999999\n",
                1,
                "too large for a 64-bit integer",
            ),
            (
                "x = 9223372036854775808\n",
                1,
                "too large for a 64-bit integer",
            ),
            (
                "x = -9223372036854775809\n",
                1,
                "does not fit a 64-bit integer",
            ),
            ("x = 'abc\n", 1, "unterminated string"),
            ("x = '''abc\n\n", 1, "unterminated string"),
            (
                "a = 1\nx = [1, 2\ny = 3\n",
                3,
                "expected ',' or a closing bracket for the '[' of line 2",
            ),
            ("x = [1, 2\n", 1, "'[' is never closed"),
            (
                "x = (1, 2]\n",
                1,
                "expected ',' or ')' to close the '(' of line 1, found ']'",
            ),
            ("x = 1)\n", 1, "unexpected ')'"),
            ("x = \n", 1, "expected a value before the end of the line"),
            ("x = $\n", 1, "unexpected character '$'"),
            (
                "x = 1 \\ 2\n",
                1,
                "a '\\' outside a string must end the line",
            ),
            (
                "x = '\\N{BULLET}'\n",
                1,
                "\\N{...} escapes are not supported",
            ),
            ("x = '\\x4'\n", 1, "truncated \\xXX escape"),
            ("x = '\\ud800'\n", 1, "is not a Unicode character"),
            ("x = b'é'\n", 1, "may only hold ASCII"),
            ("x = b'\\xff'\n", 1, "not valid UTF-8"),
            ("x = 1abc\n", 1, "invalid number '1abc'"),
            ("x = 1e\n", 1, "invalid number '1e'"),
            ("'doc' + 'x'\n", 1, "''doc' + 'x'' is not supported"),
            ("x = 1__0\n", 1, "misplaced '_'"),
            ("x = 0x\n", 1, "no digits"),
            ("True = 1\n", 1, "'True = 1' is not supported"),
            (
                "x = y = lambda: 0\n",
                1,
                "'lambda: 0' is not supported: Python functions",
            ),
        ];
        for (src, line, want) in cases {
            let e = refusal(src);
            assert_eq!(e.line, *line, "{src:?}: {e:?}");
            assert!(
                e.message.contains(want),
                "{src:?}: got {:?}, want {want:?}",
                e.message
            );
        }
    }

    #[test]
    fn earlier_refusal_wins_over_later_lexing_error() {
        let e = refusal("import os\nx = 'unterminated\n");
        assert_eq!(e.line, 1);
        assert!(e.message.starts_with("'import os'"));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!("x = {}\n", "[".repeat(100_000));
        let e = refusal(&deep);
        assert!(e.message.contains("nested more than"), "{e:?}");
        let ok = format!(
            "x = {}{}\n",
            "[".repeat(MAX_DEPTH - 1),
            "]".repeat(MAX_DEPTH - 1)
        );
        assert!(parse(&ok).is_ok());
    }

    #[test]
    fn long_snippets_are_cut() {
        let e = refusal(&format!("x = f({})\n", "1, ".repeat(100)));
        assert!(e.message.starts_with("'f(1, 1, "), "{e:?}");
        assert!(e.message.contains("...' is not a literal"), "{e:?}");
    }

    fn tokenish() -> impl Strategy<Value = String> {
        let pieces = vec![
            "x", "key", " = ", "=", "1", "-", "+", "0x", "1e", ".", "5", "_", "j", "L", "'", "\"",
            "'''", "\"\"\"", "r'", "b'", "f'", "\\", "\\x", "\\u", "\\N{", "(", ")", "[", "]", "{",
            "}", ",", ":", ";", "\n", "\r\n", " ", "\t", "#", "None", "True", "lambda", "import",
            "def", "é", "😀", "\u{0}", "**", "+=", "@",
        ];
        prop::collection::vec(prop::sample::select(pieces), 0..80).prop_map(|v| v.concat())
    }

    proptest! {
        #[test]
        fn never_panics_on_any_text(src in any::<String>()) {
            let _ = parse(&src);
        }

        #[test]
        fn never_panics_on_token_soup(src in tokenish()) {
            if let Ok(a) = parse(&src) {
                for x in a {
                    let _ = x.value.to_string();
                }
            }
        }
    }
}
