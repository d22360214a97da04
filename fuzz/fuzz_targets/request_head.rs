//! The first request head of a connection (src/http/server.rs): whatever
//! bytes a client sends, reading them never panics, and only a plain `GET`
//! without a body or upgrade is taken to be answered without hyper; the
//! verdict on a prefix the socket delivered first never contradicts the
//! whole.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::http::server::{Head, first_head};

fuzz_target!(|data: &[u8]| {
    let whole = first_head(data);
    if let Head::Complete(Some(request)) = &whole {
        assert_eq!(request.method(), "GET");
        for name in ["transfer-encoding", "upgrade"] {
            assert!(!request.headers().contains_key(name), "{name}");
        }
        if let Some(length) = request.headers().get("content-length") {
            assert_eq!(length, "0");
        }
    }
    // The socket may deliver the head in pieces: where the first byte says.
    if let Some(&cut) = data.first() {
        let cut = usize::from(cut).min(data.len());
        if let Head::Complete(Some(early)) = first_head(&data[..cut]) {
            match whole {
                Head::Complete(Some(late)) => assert_eq!(early.uri(), late.uri()),
                _ => panic!(
                    "a complete head at {cut} bytes is not one at {}",
                    data.len()
                ),
            }
        }
    }
});
