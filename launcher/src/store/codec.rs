//! The c10d TCPStore wire format (`docs/store-protocol.md`), pure and IO-free.
//!
//! A request is a command byte followed by its arguments; there is no request id and no total
//! length, so both sides must parse incrementally. Integers are little-endian (torch writes host
//! order and every platform it supports is little-endian); keys and values are a `u64` length
//! followed by the bytes. Decoded requests borrow from the input buffer so the server can store
//! a SET into an existing value's allocation without copying twice.

use thiserror::Error;

/// The magic a client sends in VALIDATE, its first command on every connection.
pub const VALIDATION_MAGIC: u32 = 0x3C85_F7CE;
/// Longest key torch's libuv server accepts (bytes).
pub const MAX_KEY_LEN: u64 = 8 * 1024;
/// Longest value torch's libuv server accepts in one request (bytes).
pub const MAX_VALUE_LEN: u64 = 8 * 1024 * 1024;
/// Most keys one CHECK/WAIT/MULTI_GET/MULTI_SET may name.
pub const MAX_KEY_COUNT: u64 = 128 * 1024;
/// Longest request this server accepts (bytes), whatever its parts: torch has no such limit, so
/// one MULTI_SET of 128 Ki values of 8 MiB could ask it for a TiB. Legitimate requests (keys,
/// NCCL ids, rendezvous descriptions) are far smaller.
pub const MAX_REQUEST_LEN: u64 = 64 * 1024 * 1024;

/// CHECK reply: every key exists.
pub const CHECK_READY: u8 = 0;
/// CHECK reply: at least one key is missing.
pub const CHECK_NOT_READY: u8 = 1;
/// WAIT/BARRIER reply: the wait is over.
pub const STOP_WAITING: u8 = 0;
/// CANCEL_WAIT reply: this connection's wait registrations are gone.
pub const WAIT_CANCELED: u8 = 1;

/// Command bytes, current numbering (append-only since VALIDATE was introduced).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Command {
    Validate = 0,
    Set = 1,
    CompareSet = 2,
    Get = 3,
    Add = 4,
    Check = 5,
    Wait = 6,
    GetNumKeys = 7,
    DeleteKey = 8,
    Append = 9,
    MultiGet = 10,
    MultiSet = 11,
    CancelWait = 12,
    Ping = 13,
    QueuePush = 14,
    QueuePop = 15,
    QueueLen = 16,
    ListKeys = 17,
    Barrier = 18,
}

impl Command {
    /// All commands in wire order.
    pub const ALL: [Command; 19] = [
        Command::Validate,
        Command::Set,
        Command::CompareSet,
        Command::Get,
        Command::Add,
        Command::Check,
        Command::Wait,
        Command::GetNumKeys,
        Command::DeleteKey,
        Command::Append,
        Command::MultiGet,
        Command::MultiSet,
        Command::CancelWait,
        Command::Ping,
        Command::QueuePush,
        Command::QueuePop,
        Command::QueueLen,
        Command::ListKeys,
        Command::Barrier,
    ];

    pub fn from_byte(byte: u8) -> Option<Command> {
        Command::ALL.get(usize::from(byte)).copied()
    }

    /// torch's name for the command, as used in its logs.
    pub fn name(self) -> &'static str {
        match self {
            Command::Validate => "VALIDATE",
            Command::Set => "SET",
            Command::CompareSet => "COMPARE_SET",
            Command::Get => "GET",
            Command::Add => "ADD",
            Command::Check => "CHECK",
            Command::Wait => "WAIT",
            Command::GetNumKeys => "GETNUMKEYS",
            Command::DeleteKey => "DELETE_KEY",
            Command::Append => "APPEND",
            Command::MultiGet => "MULTI_GET",
            Command::MultiSet => "MULTI_SET",
            Command::CancelWait => "CANCEL_WAIT",
            Command::Ping => "PING",
            Command::QueuePush => "QUEUE_PUSH",
            Command::QueuePop => "QUEUE_POP",
            Command::QueueLen => "QUEUE_LEN",
            Command::ListKeys => "LIST_KEYS",
            Command::Barrier => "BARRIER",
        }
    }
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One request, borrowing its keys and values from the buffer it was decoded from (or from the
/// caller that is about to encode it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request<'a> {
    Validate {
        magic: u32,
    },
    Set {
        key: &'a [u8],
        value: &'a [u8],
    },
    CompareSet {
        key: &'a [u8],
        expected: &'a [u8],
        desired: &'a [u8],
    },
    Get {
        key: &'a [u8],
    },
    Add {
        key: &'a [u8],
        delta: i64,
    },
    Check {
        keys: Vec<&'a [u8]>,
    },
    Wait {
        keys: Vec<&'a [u8]>,
    },
    GetNumKeys,
    DeleteKey {
        key: &'a [u8],
    },
    Append {
        key: &'a [u8],
        value: &'a [u8],
    },
    MultiGet {
        keys: Vec<&'a [u8]>,
    },
    MultiSet {
        pairs: Vec<(&'a [u8], &'a [u8])>,
    },
    CancelWait,
    Ping {
        nonce: u32,
    },
    QueuePush {
        key: &'a [u8],
        value: &'a [u8],
    },
    QueuePop {
        key: &'a [u8],
    },
    QueueLen {
        key: &'a [u8],
    },
    ListKeys,
    Barrier {
        key: &'a [u8],
        world_size: i64,
    },
}

/// The shape of the reply a request gets, which the client needs to parse it (replies carry no
/// type tag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyShape {
    /// SET, APPEND, MULTI_SET, QUEUE_PUSH, VALIDATE: nothing comes back.
    None,
    /// GET, COMPARE_SET: one length-prefixed byte string.
    Bytes,
    /// ADD, GETNUMKEYS, DELETE_KEY, QUEUE_LEN.
    I64,
    /// CHECK, WAIT, CANCEL_WAIT, BARRIER.
    U8,
    /// PING.
    U32,
    /// MULTI_GET: that many byte strings, with no count in front.
    BytesN(usize),
    /// QUEUE_POP: `i64` length before the pop, then the head if it was > 0.
    QueuePop,
    /// LIST_KEYS: `i64` count, then that many byte strings.
    KeyList,
}

/// A decoded reply (client side) or one to encode (tests, tools).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Bytes(Vec<u8>),
    I64(i64),
    U8(u8),
    U32(u32),
    BytesN(Vec<Vec<u8>>),
    QueuePop {
        len_before: i64,
        value: Option<Vec<u8>>,
    },
    KeyList(Vec<Vec<u8>>),
}

/// Why bytes could not be decoded. Each variant names what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("unknown command byte {0} (known commands are 0..=18)")]
    UnknownCommand(u8),
    #[error("{command} key of {len} bytes exceeds the limit of {MAX_KEY_LEN} bytes")]
    KeyTooLong { command: Command, len: u64 },
    #[error("{command} value of {len} bytes exceeds the limit of {MAX_VALUE_LEN} bytes")]
    ValueTooLong { command: Command, len: u64 },
    #[error("{command} names {count} keys, more than the limit of {MAX_KEY_COUNT}")]
    TooManyKeys { command: Command, count: u64 },
    #[error("{command} request is larger than the limit of {MAX_REQUEST_LEN} bytes")]
    RequestTooLarge { command: Command },
    #[error("VALIDATE magic is {got:#010x}, expected {VALIDATION_MAGIC:#010x}")]
    BadMagic { got: u32 },
    #[error("reply to {command} has an impossible length {len}")]
    BadReplyLength { command: &'static str, len: i64 },
}

/// Why decoding stopped: either the buffer ends early or the bytes are invalid.
enum Stop {
    NeedMore,
    Invalid(DecodeError),
}

impl From<DecodeError> for Stop {
    fn from(e: DecodeError) -> Stop {
        Stop::Invalid(e)
    }
}

/// A cursor over a buffer that may end in the middle of a frame.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Stop> {
        if self.buf.len() - self.pos < n {
            return Err(Stop::NeedMore);
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, Stop> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, Stop> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64, Stop> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn i64(&mut self) -> Result<i64, Stop> {
        Ok(i64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    /// A length-prefixed string; the limit is checked as soon as the length is known, so a
    /// hostile length is refused before any of its bytes arrive (as torch's server does).
    fn sized(
        &mut self,
        max: u64,
        too_long: impl FnOnce(u64) -> DecodeError,
    ) -> Result<&'a [u8], Stop> {
        let len = self.u64()?;
        if len > max {
            return Err(too_long(len).into());
        }
        // `len <= max` fits in usize on every 64- and 32-bit target.
        self.take(len as usize)
    }

    fn key(&mut self, command: Command) -> Result<&'a [u8], Stop> {
        self.sized(MAX_KEY_LEN, |len| DecodeError::KeyTooLong { command, len })
    }

    fn value(&mut self, command: Command) -> Result<&'a [u8], Stop> {
        self.sized(MAX_VALUE_LEN, |len| DecodeError::ValueTooLong {
            command,
            len,
        })
    }

    fn count(&mut self, command: Command) -> Result<usize, Stop> {
        let count = self.u64()?;
        if count > MAX_KEY_COUNT {
            return Err(DecodeError::TooManyKeys { command, count }.into());
        }
        Ok(count as usize)
    }

    fn keys(&mut self, command: Command) -> Result<Vec<&'a [u8]>, Stop> {
        let n = self.count(command)?;
        // Capacity grows with the bytes actually present, never with the claimed count.
        let mut keys = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            keys.push(self.key(command)?);
        }
        Ok(keys)
    }

    /// A reply byte string: no server-side limit applies (APPEND can grow a value past 8 MiB).
    fn reply_bytes(&mut self) -> Result<Vec<u8>, Stop> {
        let len = self.u64()?;
        let len = usize::try_from(len).map_err(|_| Stop::NeedMore)?;
        Ok(self.take(len)?.to_vec())
    }
}

/// Decodes one request from the front of `buf`.
///
/// `Ok(Some((request, consumed)))` when a whole request is there, `Ok(None)` when more bytes
/// are needed, `Err` when the bytes can never form a valid request (the connection must be
/// closed). Never panics, whatever the input.
pub fn decode_request(buf: &[u8]) -> Result<Option<(Request<'_>, usize)>, DecodeError> {
    let mut r = Reader { buf, pos: 0 };
    match read_request(&mut r) {
        Ok(req) => Ok(Some((req, r.pos))),
        Err(Stop::NeedMore) => Ok(None),
        Err(Stop::Invalid(e)) => Err(e),
    }
}

/// What a request's arguments are on the wire, for finding where it ends without decoding it.
#[derive(Clone, Copy)]
enum Part {
    U32,
    I64,
    Key,
    Value,
    /// A count, then that many keys.
    Keys,
    /// A count, then that many key and value pairs.
    Pairs,
}

fn layout(cmd: Command) -> &'static [Part] {
    use Part::*;
    match cmd {
        Command::Validate | Command::Ping => &[U32],
        Command::Set | Command::Append | Command::QueuePush => &[Key, Value],
        Command::CompareSet => &[Key, Value, Value],
        Command::Get | Command::DeleteKey | Command::QueuePop | Command::QueueLen => &[Key],
        Command::Add | Command::Barrier => &[Key, I64],
        Command::Check | Command::Wait | Command::MultiGet => &[Keys],
        Command::MultiSet => &[Pairs],
        Command::GetNumKeys | Command::CancelWait | Command::ListKeys => &[],
    }
}

/// Finds where the request at the front of a growing buffer ends, resuming where the last call
/// stopped: each byte of a request is looked at once however it arrives, so a large MULTI_SET
/// trickling in costs no more than one sent at once (re-decoding from byte 0 on every read is
/// quadratic). Limits are checked as soon as a length is known, before its bytes arrive.
#[derive(Debug, Default)]
pub struct Framer {
    /// Bytes of the current request whose fields were scanned completely.
    scanned: usize,
    /// Its command, once its first byte was scanned.
    command: Option<Command>,
    /// The next part of its layout to scan.
    part: usize,
    /// Inside a `Keys` or `Pairs` part: the fields still to scan.
    fields_left: u64,
}

impl Framer {
    /// True between requests: nothing of the next one has been scanned yet.
    pub fn is_idle(&self) -> bool {
        self.command.is_none()
    }

    /// The length of the request at the front of `buf` once all of it is there (then the framer
    /// starts over for the next one), `None` while more bytes are needed. `buf` must start at
    /// the same request, holding at least the bytes of the previous call.
    pub fn frame(&mut self, buf: &[u8]) -> Result<Option<usize>, DecodeError> {
        let command = match self.command {
            Some(c) => c,
            None => {
                let Some(&byte) = buf.first() else {
                    return Ok(None);
                };
                let c = Command::from_byte(byte).ok_or(DecodeError::UnknownCommand(byte))?;
                self.command = Some(c);
                self.scanned = 1;
                c
            }
        };
        let parts = layout(command);
        loop {
            if self.fields_left > 0 {
                let (max, too_long): (u64, fn(Command, u64) -> DecodeError) =
                    match (parts[self.part], self.fields_left % 2) {
                        // Pairs count down key, value, key, value: an even count is at a key.
                        (Part::Pairs, 1) => (MAX_VALUE_LEN, |command, len| {
                            DecodeError::ValueTooLong { command, len }
                        }),
                        _ => (MAX_KEY_LEN, |command, len| DecodeError::KeyTooLong {
                            command,
                            len,
                        }),
                    };
                if !self.sized(buf, max, |len| too_long(command, len))? {
                    return Ok(None);
                }
                self.fields_left -= 1;
                if self.fields_left == 0 {
                    self.part += 1;
                }
                continue;
            }
            let Some(&part) = parts.get(self.part) else {
                let len = self.scanned;
                *self = Framer::default();
                return Ok(Some(len));
            };
            let done = match part {
                Part::U32 => self.advance(buf, 4)?,
                Part::I64 => self.advance(buf, 8)?,
                Part::Key => self.sized(buf, MAX_KEY_LEN, |len| DecodeError::KeyTooLong {
                    command,
                    len,
                })?,
                Part::Value => self.sized(buf, MAX_VALUE_LEN, |len| DecodeError::ValueTooLong {
                    command,
                    len,
                })?,
                Part::Keys | Part::Pairs => {
                    let Some(count) = self.length(buf) else {
                        return Ok(None);
                    };
                    if count > MAX_KEY_COUNT {
                        return Err(DecodeError::TooManyKeys { command, count });
                    }
                    self.scanned += 8;
                    self.fields_left = if matches!(part, Part::Pairs) {
                        count * 2
                    } else {
                        count
                    };
                    if self.fields_left > 0 {
                        continue;
                    }
                    true
                }
            };
            if !done {
                return Ok(None);
            }
            self.part += 1;
        }
    }

    /// The u64 at the scan position, if it arrived.
    fn length(&self, buf: &[u8]) -> Option<u64> {
        let bytes = buf.get(self.scanned..self.scanned + 8)?;
        Some(u64::from_le_bytes(bytes.try_into().expect("8 bytes")))
    }

    /// A length-prefixed field: true once all of it arrived.
    fn sized(
        &mut self,
        buf: &[u8],
        max: u64,
        too_long: impl FnOnce(u64) -> DecodeError,
    ) -> Result<bool, DecodeError> {
        let Some(len) = self.length(buf) else {
            return Ok(false);
        };
        if len > max {
            return Err(too_long(len));
        }
        // `len <= max` fits in usize on every 64- and 32-bit target.
        self.advance(buf, 8 + len as usize)
    }

    /// Moves past `n` more bytes if they arrived, refusing a request that grows past
    /// [`MAX_REQUEST_LEN`].
    fn advance(&mut self, buf: &[u8], n: usize) -> Result<bool, DecodeError> {
        let end = self.scanned + n;
        if end as u64 > MAX_REQUEST_LEN {
            return Err(DecodeError::RequestTooLarge {
                command: self.command.expect("the command is scanned first"),
            });
        }
        if buf.len() < end {
            return Ok(false);
        }
        self.scanned = end;
        Ok(true)
    }
}

fn read_request<'a>(r: &mut Reader<'a>) -> Result<Request<'a>, Stop> {
    let byte = r.u8()?;
    let cmd = Command::from_byte(byte).ok_or(DecodeError::UnknownCommand(byte))?;
    Ok(match cmd {
        Command::Validate => {
            let magic = r.u32()?;
            if magic != VALIDATION_MAGIC {
                return Err(DecodeError::BadMagic { got: magic }.into());
            }
            Request::Validate { magic }
        }
        Command::Set => Request::Set {
            key: r.key(cmd)?,
            value: r.value(cmd)?,
        },
        Command::CompareSet => Request::CompareSet {
            key: r.key(cmd)?,
            expected: r.value(cmd)?,
            desired: r.value(cmd)?,
        },
        Command::Get => Request::Get { key: r.key(cmd)? },
        Command::Add => Request::Add {
            key: r.key(cmd)?,
            delta: r.i64()?,
        },
        Command::Check => Request::Check { keys: r.keys(cmd)? },
        Command::Wait => Request::Wait { keys: r.keys(cmd)? },
        Command::GetNumKeys => Request::GetNumKeys,
        Command::DeleteKey => Request::DeleteKey { key: r.key(cmd)? },
        Command::Append => Request::Append {
            key: r.key(cmd)?,
            value: r.value(cmd)?,
        },
        Command::MultiGet => Request::MultiGet { keys: r.keys(cmd)? },
        Command::MultiSet => {
            let n = r.count(cmd)?;
            let mut pairs = Vec::with_capacity(n.min(64));
            for _ in 0..n {
                pairs.push((r.key(cmd)?, r.value(cmd)?));
            }
            Request::MultiSet { pairs }
        }
        Command::CancelWait => Request::CancelWait,
        Command::Ping => Request::Ping { nonce: r.u32()? },
        Command::QueuePush => Request::QueuePush {
            key: r.key(cmd)?,
            value: r.value(cmd)?,
        },
        Command::QueuePop => Request::QueuePop { key: r.key(cmd)? },
        Command::QueueLen => Request::QueueLen { key: r.key(cmd)? },
        Command::ListKeys => Request::ListKeys,
        Command::Barrier => Request::Barrier {
            key: r.key(cmd)?,
            world_size: r.i64()?,
        },
    })
}

pub fn put_u8(out: &mut Vec<u8>, v: u8) {
    out.push(v);
}

pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// A length-prefixed byte string (keys, values, reply payloads).
pub fn put_bytes(out: &mut Vec<u8>, v: &[u8]) {
    put_u64(out, v.len() as u64);
    out.extend_from_slice(v);
}

impl Request<'_> {
    pub fn command(&self) -> Command {
        match self {
            Request::Validate { .. } => Command::Validate,
            Request::Set { .. } => Command::Set,
            Request::CompareSet { .. } => Command::CompareSet,
            Request::Get { .. } => Command::Get,
            Request::Add { .. } => Command::Add,
            Request::Check { .. } => Command::Check,
            Request::Wait { .. } => Command::Wait,
            Request::GetNumKeys => Command::GetNumKeys,
            Request::DeleteKey { .. } => Command::DeleteKey,
            Request::Append { .. } => Command::Append,
            Request::MultiGet { .. } => Command::MultiGet,
            Request::MultiSet { .. } => Command::MultiSet,
            Request::CancelWait => Command::CancelWait,
            Request::Ping { .. } => Command::Ping,
            Request::QueuePush { .. } => Command::QueuePush,
            Request::QueuePop { .. } => Command::QueuePop,
            Request::QueueLen { .. } => Command::QueueLen,
            Request::ListKeys => Command::ListKeys,
            Request::Barrier { .. } => Command::Barrier,
        }
    }

    /// What the server sends back for this request (for WAIT and BARRIER possibly much later).
    pub fn reply_shape(&self) -> ReplyShape {
        match self {
            Request::Validate { .. }
            | Request::Set { .. }
            | Request::Append { .. }
            | Request::MultiSet { .. }
            | Request::QueuePush { .. } => ReplyShape::None,
            Request::Get { .. } | Request::CompareSet { .. } => ReplyShape::Bytes,
            Request::Add { .. }
            | Request::GetNumKeys
            | Request::DeleteKey { .. }
            | Request::QueueLen { .. } => ReplyShape::I64,
            Request::Check { .. }
            | Request::Wait { .. }
            | Request::CancelWait
            | Request::Barrier { .. } => ReplyShape::U8,
            Request::Ping { .. } => ReplyShape::U32,
            Request::MultiGet { keys } => ReplyShape::BytesN(keys.len()),
            Request::QueuePop { .. } => ReplyShape::QueuePop,
            Request::ListKeys => ReplyShape::KeyList,
        }
    }

    /// Checks the limits the server enforces, so a client can refuse locally instead of having
    /// its connection closed.
    pub fn check_limits(&self) -> Result<(), DecodeError> {
        let command = self.command();
        let key = |k: &[u8]| {
            if k.len() as u64 > MAX_KEY_LEN {
                Err(DecodeError::KeyTooLong {
                    command,
                    len: k.len() as u64,
                })
            } else {
                Ok(())
            }
        };
        let value = |v: &[u8]| {
            if v.len() as u64 > MAX_VALUE_LEN {
                Err(DecodeError::ValueTooLong {
                    command,
                    len: v.len() as u64,
                })
            } else {
                Ok(())
            }
        };
        let count = |n: usize| {
            if n as u64 > MAX_KEY_COUNT {
                Err(DecodeError::TooManyKeys {
                    command,
                    count: n as u64,
                })
            } else {
                Ok(())
            }
        };
        // Only requests naming many keys can pass the request length: the command byte and
        // the count, then the fields.
        let total = |fields: u64| {
            if 9 + fields > MAX_REQUEST_LEN {
                Err(DecodeError::RequestTooLarge { command })
            } else {
                Ok(())
            }
        };
        match self {
            Request::Validate { .. }
            | Request::GetNumKeys
            | Request::CancelWait
            | Request::Ping { .. }
            | Request::ListKeys => Ok(()),
            Request::Set { key: k, value: v }
            | Request::Append { key: k, value: v }
            | Request::QueuePush { key: k, value: v } => key(k).and(value(v)),
            Request::CompareSet {
                key: k,
                expected,
                desired,
            } => key(k).and(value(expected)).and(value(desired)),
            Request::Get { key: k }
            | Request::Add { key: k, .. }
            | Request::DeleteKey { key: k }
            | Request::QueuePop { key: k }
            | Request::QueueLen { key: k }
            | Request::Barrier { key: k, .. } => key(k),
            Request::Check { keys } | Request::Wait { keys } | Request::MultiGet { keys } => {
                count(keys.len())?;
                keys.iter().try_for_each(|k| key(k))?;
                total(keys.iter().map(|k| 8 + k.len() as u64).sum())
            }
            Request::MultiSet { pairs } => {
                count(pairs.len())?;
                pairs.iter().try_for_each(|(k, v)| key(k).and(value(v)))?;
                total(
                    pairs
                        .iter()
                        .map(|(k, v)| 16 + (k.len() + v.len()) as u64)
                        .sum(),
                )
            }
        }
    }

    /// Appends the request's wire bytes to `out` (client side).
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_u8(out, self.command() as u8);
        match self {
            Request::Validate { magic } => put_u32(out, *magic),
            Request::Set { key, value }
            | Request::Append { key, value }
            | Request::QueuePush { key, value } => {
                put_bytes(out, key);
                put_bytes(out, value);
            }
            Request::CompareSet {
                key,
                expected,
                desired,
            } => {
                put_bytes(out, key);
                put_bytes(out, expected);
                put_bytes(out, desired);
            }
            Request::Get { key }
            | Request::DeleteKey { key }
            | Request::QueuePop { key }
            | Request::QueueLen { key } => put_bytes(out, key),
            Request::Add { key, delta } => {
                put_bytes(out, key);
                put_i64(out, *delta);
            }
            Request::Check { keys } | Request::Wait { keys } | Request::MultiGet { keys } => {
                put_u64(out, keys.len() as u64);
                for k in keys {
                    put_bytes(out, k);
                }
            }
            Request::MultiSet { pairs } => {
                // torch's client writes this count as i64; the bytes are the same.
                put_i64(out, pairs.len() as i64);
                for (k, v) in pairs {
                    put_bytes(out, k);
                    put_bytes(out, v);
                }
            }
            Request::GetNumKeys | Request::CancelWait | Request::ListKeys => {}
            Request::Ping { nonce } => put_u32(out, *nonce),
            Request::Barrier { key, world_size } => {
                put_bytes(out, key);
                put_i64(out, *world_size);
            }
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

impl Reply {
    /// Appends the reply's wire bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Reply::Bytes(b) => put_bytes(out, b),
            Reply::I64(v) => put_i64(out, *v),
            Reply::U8(v) => put_u8(out, *v),
            Reply::U32(v) => put_u32(out, *v),
            Reply::BytesN(items) => items.iter().for_each(|b| put_bytes(out, b)),
            Reply::QueuePop { len_before, value } => {
                put_i64(out, *len_before);
                if let Some(v) = value {
                    put_bytes(out, v);
                }
            }
            Reply::KeyList(keys) => {
                put_i64(out, keys.len() as i64);
                keys.iter().for_each(|k| put_bytes(out, k));
            }
        }
    }
}

/// Decodes one reply of the given shape from the front of `buf` (client side).
///
/// Same contract as [`decode_request`]: `Ok(None)` means wait for more bytes. `ReplyShape::None`
/// decodes nothing and must not be asked for.
pub fn decode_reply(shape: ReplyShape, buf: &[u8]) -> Result<Option<(Reply, usize)>, DecodeError> {
    let mut r = Reader { buf, pos: 0 };
    let res = (|| -> Result<Reply, Stop> {
        Ok(match shape {
            ReplyShape::None => Reply::BytesN(Vec::new()),
            ReplyShape::Bytes => Reply::Bytes(r.reply_bytes()?),
            ReplyShape::I64 => Reply::I64(r.i64()?),
            ReplyShape::U8 => Reply::U8(r.u8()?),
            ReplyShape::U32 => Reply::U32(r.u32()?),
            ReplyShape::BytesN(n) => {
                let mut items = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    items.push(r.reply_bytes()?);
                }
                Reply::BytesN(items)
            }
            ReplyShape::QueuePop => {
                let len_before = r.i64()?;
                if len_before < 0 {
                    return Err(DecodeError::BadReplyLength {
                        command: "QUEUE_POP",
                        len: len_before,
                    }
                    .into());
                }
                let value = if len_before > 0 {
                    Some(r.reply_bytes()?)
                } else {
                    None
                };
                Reply::QueuePop { len_before, value }
            }
            ReplyShape::KeyList => {
                let n = r.i64()?;
                if n < 0 {
                    return Err(DecodeError::BadReplyLength {
                        command: "LIST_KEYS",
                        len: n,
                    }
                    .into());
                }
                let mut keys = Vec::with_capacity((n as usize).min(1024));
                for _ in 0..n {
                    keys.push(r.reply_bytes()?);
                }
                Reply::KeyList(keys)
            }
        })
    })();
    match res {
        Ok(reply) => Ok(Some((reply, r.pos))),
        Err(Stop::NeedMore) => Ok(None),
        Err(Stop::Invalid(e)) => Err(e),
    }
}

/// Parses an integer the way `std::stoll` does (torch's ADD and BARRIER parse stored values
/// with it): optional leading whitespace, an optional sign, at least one decimal digit, and
/// anything after the digits ignored. `None` where stoll would throw (no digits, overflow).
pub fn parse_stoll(bytes: &[u8]) -> Option<i64> {
    let mut i = 0;
    while i < bytes.len() && matches!(bytes[i], b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r') {
        i += 1;
    }
    let negative = match bytes.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let start = i;
    // Accumulate negatively so i64::MIN parses without overflow.
    let mut acc: i64 = 0;
    while let Some(d) = bytes.get(i).filter(|b| b.is_ascii_digit()) {
        acc = acc.checked_mul(10)?.checked_sub(i64::from(d - b'0'))?;
        i += 1;
    }
    if i == start {
        return None;
    }
    if negative {
        Some(acc)
    } else {
        acc.checked_neg()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    /// The worked example of `docs/store-protocol.md`, byte for byte.
    #[test]
    fn worked_example_matches_the_reference() {
        let cases: Vec<(Request<'_>, &str)> = vec![
            (
                Request::Validate {
                    magic: VALIDATION_MAGIC,
                },
                "00 CE F7 85 3C",
            ),
            (Request::Ping { nonce: 0x1234 }, "0D 34 12 00 00"),
            (
                Request::Add {
                    key: b"init/",
                    delta: 1,
                },
                "04 05 00 00 00 00 00 00 00 69 6E 69 74 2F 01 00 00 00 00 00 00 00",
            ),
            (
                Request::Set {
                    key: b"/a",
                    value: b"b",
                },
                "01 02 00 00 00 00 00 00 00 2F 61 01 00 00 00 00 00 00 00 62",
            ),
            (
                Request::Wait { keys: vec![b"/a"] },
                "06 01 00 00 00 00 00 00 00 02 00 00 00 00 00 00 00 2F 61",
            ),
            (
                Request::Get { key: b"/a" },
                "03 02 00 00 00 00 00 00 00 2F 61",
            ),
        ];
        for (req, bytes) in cases {
            let wire = hex(bytes);
            assert_eq!(req.to_bytes(), wire, "encoding {req:?}");
            assert_eq!(decode_request(&wire).unwrap(), Some((req, wire.len())));
        }
        let replies: Vec<(ReplyShape, Reply, &str)> = vec![
            (ReplyShape::U32, Reply::U32(0x1234), "34 12 00 00"),
            (ReplyShape::I64, Reply::I64(1), "01 00 00 00 00 00 00 00"),
            (ReplyShape::U8, Reply::U8(STOP_WAITING), "00"),
            (
                ReplyShape::Bytes,
                Reply::Bytes(b"b".to_vec()),
                "01 00 00 00 00 00 00 00 62",
            ),
        ];
        for (shape, reply, bytes) in replies {
            let wire = hex(bytes);
            let mut enc = Vec::new();
            reply.encode(&mut enc);
            assert_eq!(enc, wire);
            assert_eq!(
                decode_reply(shape, &wire).unwrap(),
                Some((reply, wire.len()))
            );
        }
    }

    fn all_requests() -> Vec<Request<'static>> {
        vec![
            Request::Validate {
                magic: VALIDATION_MAGIC,
            },
            Request::Set {
                key: b"/k",
                value: b"v",
            },
            Request::CompareSet {
                key: b"/k",
                expected: b"",
                desired: b"new",
            },
            Request::Get { key: b"/k" },
            Request::Add {
                key: b"/n",
                delta: -7,
            },
            Request::Check {
                keys: vec![b"/a", b"/b"],
            },
            Request::Wait { keys: vec![] },
            Request::GetNumKeys,
            Request::DeleteKey { key: b"/k" },
            Request::Append {
                key: b"/k",
                value: b"more",
            },
            Request::MultiGet {
                keys: vec![b"/a", b"", b"/c"],
            },
            Request::MultiSet {
                pairs: vec![(b"/a", b"1"), (b"/b", b"")],
            },
            Request::CancelWait,
            Request::Ping { nonce: 0xDEAD_BEEF },
            Request::QueuePush {
                key: b"/q",
                value: b"item",
            },
            Request::QueuePop { key: b"/q" },
            Request::QueueLen { key: b"/q" },
            Request::ListKeys,
            Request::Barrier {
                key: b"/bar",
                world_size: 3,
            },
        ]
    }

    #[test]
    fn every_command_round_trips_and_is_covered() {
        let reqs = all_requests();
        let mut seen: Vec<Command> = reqs.iter().map(Request::command).collect();
        seen.dedup();
        assert_eq!(
            seen,
            Command::ALL.to_vec(),
            "one request per command, in wire order"
        );
        for req in reqs {
            let wire = req.to_bytes();
            assert_eq!(wire[0], req.command() as u8);
            assert_eq!(
                decode_request(&wire).unwrap(),
                Some((req.clone(), wire.len()))
            );
            req.check_limits().unwrap();
        }
    }

    #[test]
    fn every_strict_prefix_needs_more_bytes() {
        for req in all_requests() {
            let wire = req.to_bytes();
            for cut in 0..wire.len() {
                assert_eq!(
                    decode_request(&wire[..cut]).unwrap(),
                    None,
                    "{req:?} cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn packed_requests_decode_one_after_another() {
        let reqs = all_requests();
        let mut wire = Vec::new();
        reqs.iter().for_each(|r| r.encode(&mut wire));
        wire.extend_from_slice(&[Command::Set as u8, 5, 0]); // the start of one more
        let mut pos = 0;
        let mut got = Vec::new();
        while let Some((req, n)) = decode_request(&wire[pos..]).unwrap() {
            pos += n;
            got.push(req);
        }
        assert_eq!(got, reqs);
        assert_eq!(
            wire.len() - pos,
            3,
            "the partial request is left in the buffer"
        );
    }

    #[test]
    fn command_names_and_bytes() {
        assert_eq!(Command::from_byte(18), Some(Command::Barrier));
        assert_eq!(Command::from_byte(19), None);
        assert_eq!(Command::CompareSet.to_string(), "COMPARE_SET");
        assert!(
            Command::ALL
                .iter()
                .enumerate()
                .all(|(i, c)| *c as usize == i)
        );
    }

    fn len(n: u64) -> [u8; 8] {
        n.to_le_bytes()
    }

    #[test]
    fn unknown_command_is_refused() {
        for b in [19u8, 42, 0xFF] {
            let err = decode_request(&[b, 0, 0]).unwrap_err();
            assert_eq!(err, DecodeError::UnknownCommand(b));
            assert!(err.to_string().contains(&b.to_string()));
        }
    }

    #[test]
    fn bad_magic_is_refused() {
        let err = decode_request(&[0, 1, 2, 3, 4]).unwrap_err();
        assert_eq!(err, DecodeError::BadMagic { got: 0x0403_0201 });
        assert!(err.to_string().contains("0x04030201"), "{err}");
    }

    #[test]
    fn oversized_key_is_refused_before_its_bytes_arrive() {
        let mut wire = vec![Command::Get as u8];
        wire.extend_from_slice(&len(MAX_KEY_LEN + 1));
        let err = decode_request(&wire).unwrap_err();
        assert_eq!(
            err,
            DecodeError::KeyTooLong {
                command: Command::Get,
                len: MAX_KEY_LEN + 1
            }
        );
        assert!(err.to_string().contains("GET key of 8193 bytes"), "{err}");
        // Exactly at the limit is fine (just incomplete here).
        let mut ok = vec![Command::Get as u8];
        ok.extend_from_slice(&len(MAX_KEY_LEN));
        assert_eq!(decode_request(&ok).unwrap(), None);
        // A huge length (would overflow a naive usize add) is refused the same way.
        let mut huge = vec![Command::Set as u8];
        huge.extend_from_slice(&len(u64::MAX));
        assert!(matches!(
            decode_request(&huge),
            Err(DecodeError::KeyTooLong { .. })
        ));
    }

    #[test]
    fn oversized_value_is_refused() {
        for cmd in [
            Command::Set,
            Command::Append,
            Command::QueuePush,
            Command::CompareSet,
        ] {
            let mut wire = vec![cmd as u8];
            wire.extend_from_slice(&len(1));
            wire.push(b'k');
            wire.extend_from_slice(&len(MAX_VALUE_LEN + 1));
            assert_eq!(
                decode_request(&wire).unwrap_err(),
                DecodeError::ValueTooLong {
                    command: cmd,
                    len: MAX_VALUE_LEN + 1
                }
            );
        }
        // COMPARE_SET's second value is checked too.
        let mut wire = vec![Command::CompareSet as u8];
        wire.extend_from_slice(&len(1));
        wire.push(b'k');
        wire.extend_from_slice(&len(0));
        wire.extend_from_slice(&len(u64::MAX));
        assert!(matches!(
            decode_request(&wire),
            Err(DecodeError::ValueTooLong { .. })
        ));
    }

    #[test]
    fn too_many_keys_is_refused() {
        for cmd in [
            Command::Check,
            Command::Wait,
            Command::MultiGet,
            Command::MultiSet,
        ] {
            let mut wire = vec![cmd as u8];
            wire.extend_from_slice(&len(MAX_KEY_COUNT + 1));
            let err = decode_request(&wire).unwrap_err();
            assert_eq!(
                err,
                DecodeError::TooManyKeys {
                    command: cmd,
                    count: MAX_KEY_COUNT + 1
                }
            );
            assert!(err.to_string().contains("131073 keys"), "{err}");
            let mut ok = vec![cmd as u8];
            ok.extend_from_slice(&len(MAX_KEY_COUNT));
            assert_eq!(decode_request(&ok).unwrap(), None);
        }
    }

    #[test]
    fn client_side_limits_match_the_server() {
        let big_key = vec![b'k'; MAX_KEY_LEN as usize + 1];
        let req = Request::Get { key: &big_key };
        assert!(matches!(
            req.check_limits(),
            Err(DecodeError::KeyTooLong { .. })
        ));
        assert!(matches!(
            decode_request(&req.to_bytes()),
            Err(DecodeError::KeyTooLong { .. })
        ));
        let big_value = vec![0u8; MAX_VALUE_LEN as usize + 1];
        let req = Request::Set {
            key: b"/k",
            value: &big_value,
        };
        assert!(matches!(
            req.check_limits(),
            Err(DecodeError::ValueTooLong { .. })
        ));
    }

    #[test]
    fn replies_decode_incrementally() {
        let cases = vec![
            (
                ReplyShape::BytesN(3),
                Reply::BytesN(vec![b"a".to_vec(), vec![], b"ccc".to_vec()]),
            ),
            (
                ReplyShape::QueuePop,
                Reply::QueuePop {
                    len_before: 2,
                    value: Some(b"head".to_vec()),
                },
            ),
            (
                ReplyShape::QueuePop,
                Reply::QueuePop {
                    len_before: 0,
                    value: None,
                },
            ),
            (
                ReplyShape::KeyList,
                Reply::KeyList(vec![b"/a".to_vec(), b"init/".to_vec()]),
            ),
            (ReplyShape::KeyList, Reply::KeyList(vec![])),
            (ReplyShape::Bytes, Reply::Bytes(vec![])),
        ];
        for (shape, reply) in cases {
            let mut wire = Vec::new();
            reply.encode(&mut wire);
            for cut in 0..wire.len() {
                assert_eq!(
                    decode_reply(shape, &wire[..cut]).unwrap(),
                    None,
                    "{reply:?} at {cut}"
                );
            }
            wire.push(0x77); // bytes of a later reply stay unconsumed
            assert_eq!(
                decode_reply(shape, &wire).unwrap(),
                Some((reply, wire.len() - 1))
            );
        }
        let mut neg = Vec::new();
        put_i64(&mut neg, -1);
        assert!(matches!(
            decode_reply(ReplyShape::KeyList, &neg),
            Err(DecodeError::BadReplyLength { .. })
        ));
        assert!(matches!(
            decode_reply(ReplyShape::QueuePop, &neg),
            Err(DecodeError::BadReplyLength { .. })
        ));
    }

    #[test]
    fn stoll_matches_cpp() {
        assert_eq!(parse_stoll(b"42"), Some(42));
        assert_eq!(parse_stoll(b"  -17"), Some(-17));
        assert_eq!(parse_stoll(b"+5"), Some(5));
        assert_eq!(parse_stoll(b"12abc"), Some(12));
        assert_eq!(parse_stoll(b"0x10"), Some(0));
        assert_eq!(parse_stoll(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_stoll(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_stoll(b"9223372036854775808"), None);
        assert_eq!(parse_stoll(b""), None);
        assert_eq!(parse_stoll(b"abc"), None);
        assert_eq!(parse_stoll(b"-"), None);
        assert_eq!(parse_stoll(b" + 1"), None);
    }

    /// Owned data for an arbitrary request; `as_request` borrows it.
    #[derive(Debug, Clone)]
    enum Owned {
        Validate,
        Set(Vec<u8>, Vec<u8>),
        CompareSet(Vec<u8>, Vec<u8>, Vec<u8>),
        Get(Vec<u8>),
        Add(Vec<u8>, i64),
        Check(Vec<Vec<u8>>),
        Wait(Vec<Vec<u8>>),
        GetNumKeys,
        DeleteKey(Vec<u8>),
        Append(Vec<u8>, Vec<u8>),
        MultiGet(Vec<Vec<u8>>),
        MultiSet(Vec<(Vec<u8>, Vec<u8>)>),
        CancelWait,
        Ping(u32),
        QueuePush(Vec<u8>, Vec<u8>),
        QueuePop(Vec<u8>),
        QueueLen(Vec<u8>),
        ListKeys,
        Barrier(Vec<u8>, i64),
    }

    impl Owned {
        fn as_request(&self) -> Request<'_> {
            fn ks(v: &[Vec<u8>]) -> Vec<&[u8]> {
                v.iter().map(Vec::as_slice).collect()
            }
            match self {
                Owned::Validate => Request::Validate {
                    magic: VALIDATION_MAGIC,
                },
                Owned::Set(k, v) => Request::Set { key: k, value: v },
                Owned::CompareSet(k, e, d) => Request::CompareSet {
                    key: k,
                    expected: e,
                    desired: d,
                },
                Owned::Get(k) => Request::Get { key: k },
                Owned::Add(k, d) => Request::Add { key: k, delta: *d },
                Owned::Check(k) => Request::Check { keys: ks(k) },
                Owned::Wait(k) => Request::Wait { keys: ks(k) },
                Owned::GetNumKeys => Request::GetNumKeys,
                Owned::DeleteKey(k) => Request::DeleteKey { key: k },
                Owned::Append(k, v) => Request::Append { key: k, value: v },
                Owned::MultiGet(k) => Request::MultiGet { keys: ks(k) },
                Owned::MultiSet(p) => Request::MultiSet {
                    pairs: p
                        .iter()
                        .map(|(k, v)| (k.as_slice(), v.as_slice()))
                        .collect(),
                },
                Owned::CancelWait => Request::CancelWait,
                Owned::Ping(n) => Request::Ping { nonce: *n },
                Owned::QueuePush(k, v) => Request::QueuePush { key: k, value: v },
                Owned::QueuePop(k) => Request::QueuePop { key: k },
                Owned::QueueLen(k) => Request::QueueLen { key: k },
                Owned::ListKeys => Request::ListKeys,
                Owned::Barrier(k, w) => Request::Barrier {
                    key: k,
                    world_size: *w,
                },
            }
        }
    }

    fn arb_owned() -> impl Strategy<Value = Owned> {
        let b = || proptest::collection::vec(any::<u8>(), 0..40);
        let keys = || proptest::collection::vec(b(), 0..5);
        prop_oneof![
            Just(Owned::Validate),
            (b(), b()).prop_map(|(k, v)| Owned::Set(k, v)),
            (b(), b(), b()).prop_map(|(k, e, d)| Owned::CompareSet(k, e, d)),
            b().prop_map(Owned::Get),
            (b(), any::<i64>()).prop_map(|(k, d)| Owned::Add(k, d)),
            keys().prop_map(Owned::Check),
            keys().prop_map(Owned::Wait),
            Just(Owned::GetNumKeys),
            b().prop_map(Owned::DeleteKey),
            (b(), b()).prop_map(|(k, v)| Owned::Append(k, v)),
            keys().prop_map(Owned::MultiGet),
            proptest::collection::vec((b(), b()), 0..5).prop_map(Owned::MultiSet),
            Just(Owned::CancelWait),
            any::<u32>().prop_map(Owned::Ping),
            (b(), b()).prop_map(|(k, v)| Owned::QueuePush(k, v)),
            b().prop_map(Owned::QueuePop),
            b().prop_map(Owned::QueueLen),
            Just(Owned::ListKeys),
            (b(), any::<i64>()).prop_map(|(k, w)| Owned::Barrier(k, w)),
        ]
    }

    #[test]
    fn the_framer_refuses_a_request_too_large_before_its_bytes_arrive() {
        // A MULTI_SET of 8 values of 8 MiB: each is allowed, together they are not.
        let mut wire = vec![Command::MultiSet as u8];
        wire.extend_from_slice(&8u64.to_le_bytes());
        let mut framer = Framer::default();
        for _ in 0..7 {
            wire.extend_from_slice(&1u64.to_le_bytes());
            wire.push(b'k');
            wire.extend_from_slice(&MAX_VALUE_LEN.to_le_bytes());
            assert_eq!(framer.frame(&wire), Ok(None));
            wire.resize(wire.len() + MAX_VALUE_LEN as usize, 0);
        }
        assert_eq!(framer.frame(&wire), Ok(None));
        wire.extend_from_slice(&1u64.to_le_bytes());
        wire.push(b'k');
        wire.extend_from_slice(&MAX_VALUE_LEN.to_le_bytes());
        assert_eq!(
            framer.frame(&wire),
            Err(DecodeError::RequestTooLarge {
                command: Command::MultiSet
            })
        );
    }

    #[test]
    fn the_framer_checks_each_length_as_it_arrives() {
        let mut wire = vec![Command::Get as u8];
        wire.extend_from_slice(&(MAX_KEY_LEN + 1).to_le_bytes());
        assert_eq!(
            Framer::default().frame(&wire),
            Err(DecodeError::KeyTooLong {
                command: Command::Get,
                len: MAX_KEY_LEN + 1
            })
        );
        assert_eq!(
            Framer::default().frame(&[99]),
            Err(DecodeError::UnknownCommand(99))
        );
    }

    proptest! {
        #[test]
        fn the_framer_finds_every_request_however_the_bytes_arrive(reqs in proptest::collection::vec(arb_owned(), 1..6), chunk in 1usize..40) {
            let reqs: Vec<Request<'_>> = reqs.iter().map(Owned::as_request).collect();
            let mut wire = Vec::new();
            let mut ends = Vec::new();
            for r in &reqs {
                r.encode(&mut wire);
                ends.push(wire.len());
            }
            let mut framer = Framer::default();
            let (mut buf, mut start, mut found) = (Vec::new(), 0, Vec::new());
            for piece in wire.chunks(chunk) {
                buf.extend_from_slice(piece);
                while let Some(len) = framer.frame(&buf[start..]).unwrap() {
                    // What the framer delimits is exactly one whole request.
                    let (_, n) = decode_request(&buf[start..start + len]).unwrap().unwrap();
                    prop_assert_eq!(n, len);
                    start += len;
                    found.push(start);
                }
            }
            prop_assert_eq!(found, ends);
        }

        #[test]
        fn encode_then_decode_is_identity(reqs in proptest::collection::vec(arb_owned(), 1..6), split in any::<prop::sample::Index>()) {
            let reqs: Vec<Request<'_>> = reqs.iter().map(Owned::as_request).collect();
            let mut wire = Vec::new();
            reqs.iter().for_each(|r| r.encode(&mut wire));
            // Feed the stream in two arbitrary pieces, as TCP may deliver it.
            let cut = split.index(wire.len() + 1);
            let mut buf = wire[..cut].to_vec();
            let mut got = Vec::new();
            let mut pos = 0;
            let mut fed_rest = false;
            loop {
                match decode_request(&buf[pos..]).unwrap() {
                    Some((req, n)) => {
                        pos += n;
                        got.push(req.to_bytes());
                    }
                    None if !fed_rest => {
                        buf.extend_from_slice(&wire[cut..]);
                        fed_rest = true;
                    }
                    None => break,
                }
            }
            prop_assert_eq!(pos, wire.len());
            let expected: Vec<Vec<u8>> = reqs.iter().map(Request::to_bytes).collect();
            prop_assert_eq!(got, expected);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(Some((_, n))) = decode_request(&bytes) {
                prop_assert!(n > 0 && n <= bytes.len());
            }
            for shape in [ReplyShape::Bytes, ReplyShape::I64, ReplyShape::U8, ReplyShape::U32,
                          ReplyShape::BytesN(3), ReplyShape::QueuePop, ReplyShape::KeyList] {
                if let Ok(Some((_, n))) = decode_reply(shape, &bytes) {
                    prop_assert!(n <= bytes.len());
                }
            }
        }

        #[test]
        fn arbitrary_bytes_after_a_valid_command_byte_never_panic(cmd in 0u8..19, rest in proptest::collection::vec(any::<u8>(), 0..128)) {
            let mut bytes = vec![cmd];
            bytes.extend(rest);
            let _ = decode_request(&bytes);
        }
    }
}
