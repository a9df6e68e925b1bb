//! The store's wire codec (launcher/src/store/codec.rs) on arbitrary bytes:
//! * `decode_request` never panics, and a request it accepts re-encodes to exactly the bytes it
//!   consumed (the encoding is canonical);
//! * the resumable `Framer`, fed the same stream in arbitrary chunks (as reads deliver it),
//!   agrees with a one-shot `decode_request` of what has arrived after every chunk: the same
//!   request length, "need more" at the same points, the same error (the framer does not look
//!   at VALIDATE's magic, so a bad magic is the one error it frames as a whole request);
//! * `decode_reply` (the client's side of untrusted bytes) never panics for any reply shape, and
//!   `parse_stoll` never panics.
//!
//! Input: byte 0 is `n` (mod 16), bytes 1..=n are chunk sizes (each 0..=255; 0 feeds nothing
//! new), the rest is the stream; whatever the sizes leave comes as one last chunk.

#![no_main]

use elastic_launch::store::codec::{
    self, Command, DecodeError, Framer, ReplyShape, VALIDATION_MAGIC,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 16).min(rest.len());
    let (sizes, stream) = rest.split_at(n);

    one_shot(stream);
    chunked(sizes, stream);
    replies(stream);
    let _ = codec::parse_stoll(stream);
});

/// Every request decoded back to back from the front of `stream`.
fn one_shot(stream: &[u8]) {
    let mut pos = 0;
    while pos < stream.len() {
        match codec::decode_request(&stream[pos..]) {
            Ok(Some((req, len))) => {
                assert!(
                    len > 0 && pos + len <= stream.len(),
                    "consumed {len} at {pos}"
                );
                assert_eq!(
                    req.to_bytes(),
                    &stream[pos..pos + len],
                    "{req:?} does not re-encode to its bytes"
                );
                // What the server accepts, a client may send: limits agree with the decoder.
                req.check_limits()
                    .expect("a decoded request is within the limits");
                pos += len;
            }
            Ok(None) | Err(_) => return,
        }
    }
}

/// The framer against one-shot decodes, the stream arriving in chunks.
fn chunked(sizes: &[u8], stream: &[u8]) {
    let mut framer = Framer::default();
    // Start of the request being framed, and how much of the stream has arrived.
    let mut start = 0;
    let mut arrived = 0;
    let mut sizes = sizes.iter().map(|&s| usize::from(s));
    loop {
        arrived = match sizes.next() {
            Some(s) => (arrived + s).min(stream.len()),
            None => stream.len(),
        };
        // Frame every whole request that has arrived, as the server does after each read.
        loop {
            let buf = &stream[start..arrived];
            let framed = framer.frame(buf);
            let decoded = codec::decode_request(buf);
            match (&framed, &decoded) {
                (Ok(Some(a)), Ok(Some((_, b)))) => assert_eq!(a, b, "request length"),
                (Ok(None), Ok(None)) => {}
                (Err(a), Err(b)) => assert_eq!(a, b, "error"),
                // The framer leaves VALIDATE's magic to the decoder.
                (Ok(Some(5)), Err(DecodeError::BadMagic { got }))
                    if buf[0] == Command::Validate as u8 && *got != VALIDATION_MAGIC => {}
                _ => panic!(
                    "framer {framed:?} but decode {decoded:?} on {} bytes at {start}",
                    buf.len()
                ),
            }
            match framed {
                Ok(Some(len)) => {
                    assert!(framer.is_idle(), "the framer starts over after a request");
                    start += len;
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        if arrived == stream.len() {
            return;
        }
    }
}

/// The client's reply decoder on arbitrary server bytes.
fn replies(stream: &[u8]) {
    let n = stream.first().map_or(0, |&b| usize::from(b % 8));
    for shape in [
        ReplyShape::Bytes,
        ReplyShape::I64,
        ReplyShape::U8,
        ReplyShape::U32,
        ReplyShape::BytesN(n),
        ReplyShape::QueuePop,
        ReplyShape::KeyList,
    ] {
        if let Ok(Some((reply, len))) = codec::decode_reply(shape, stream) {
            assert!(len <= stream.len());
            let mut again = Vec::new();
            reply.encode(&mut again);
            assert_eq!(
                again,
                &stream[..len],
                "{shape:?} reply re-encodes to its bytes"
            );
        }
    }
}
