//! The challenge page: self-contained HTML (no external assets) whose script finds the
//! nonce, sends it back, and reloads the page once the clearance cookie is set. Clients
//! without JavaScript read the explanation in `<noscript>`.

/// Header carrying the challenge in the answer request.
pub const CHALLENGE_HEADER: &str = "x-edge-challenge";
/// Header carrying the nonce in the answer request.
pub const NONCE_HEADER: &str = "x-edge-nonce";

/// Text of the page, as configured.
#[derive(Debug, Clone)]
pub struct PageText {
    /// The heading and title.
    pub title: String,
    /// What the page says while the browser works.
    pub text: String,
    /// What clients without JavaScript read.
    pub noscript: String,
}

/// `text` escaped for HTML text and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The page for one challenge (base64url: safe inside a JS string) of `difficulty` bits.
pub fn render(text: &PageText, challenge: &str, difficulty: u8) -> String {
    let title = escape(&text.title);
    let body = escape(&text.text);
    let noscript = escape(&text.noscript);
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="robots" content="noindex">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>body{{font-family:sans-serif;max-width:36em;margin:4em auto;padding:0 1em;line-height:1.5}}</style>
</head><body>
<h1>{title}</h1>
<p id="status">{body}</p>
<noscript><p>{noscript}</p></noscript>
<script>
"use strict";
const CHALLENGE = "{challenge}", DIFFICULTY = {difficulty};
const K = [0x428a2f98,0x71374491,0xb5c0fbcf,0xe9b5dba5,0x3956c25b,0x59f111f1,0x923f82a4,0xab1c5ed5,
0xd807aa98,0x12835b01,0x243185be,0x550c7dc3,0x72be5d74,0x80deb1fe,0x9bdc06a7,0xc19bf174,
0xe49b69c1,0xefbe4786,0x0fc19dc6,0x240ca1cc,0x2de92c6f,0x4a7484aa,0x5cb0a9dc,0x76f988da,
0x983e5152,0xa831c66d,0xb00327c8,0xbf597fc7,0xc6e00bf3,0xd5a79147,0x06ca6351,0x14292967,
0x27b70a85,0x2e1b2138,0x4d2c6dfc,0x53380d13,0x650a7354,0x766a0abb,0x81c2c92e,0x92722c85,
0xa2bfe8a1,0xa81a664b,0xc24b8b70,0xc76c51a3,0xd192e819,0xd6990624,0xf40e3585,0x106aa070,
0x19a4c116,0x1e376c08,0x2748774c,0x34b0bcb5,0x391c0cb3,0x4ed8aa4a,0x5b9cca4f,0x682e6ff3,
0x748f82ee,0x78a5636f,0x84c87814,0x8cc70208,0x90befffa,0xa4506ceb,0xbef9a3f7,0xc67178f2];
const W = new Uint32Array(64);
// One SHA-256 block of `m` at `o` into `h` (8 words).
function compress(h, m, o) {{
  for (let t = 0; t < 16; t++) W[t] = (m[o + 4 * t] << 24) | (m[o + 4 * t + 1] << 16) | (m[o + 4 * t + 2] << 8) | m[o + 4 * t + 3];
  for (let t = 16; t < 64; t++) {{
    const x = W[t - 15], y = W[t - 2];
    const s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
    const s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
    W[t] = (W[t - 16] + s0 + W[t - 7] + s1) | 0;
  }}
  let a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
  for (let t = 0; t < 64; t++) {{
    const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
    const t1 = (k + S1 + ((e & f) ^ (~e & g)) + K[t] + W[t]) | 0;
    const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
    const t2 = (S0 + ((a & b) ^ (a & c) ^ (b & c))) | 0;
    k = g; g = f; f = e; e = (d + t1) | 0; d = c; c = b; b = a; a = (t1 + t2) | 0;
  }}
  h[0] = (h[0] + a) | 0; h[1] = (h[1] + b) | 0; h[2] = (h[2] + c) | 0; h[3] = (h[3] + d) | 0;
  h[4] = (h[4] + e) | 0; h[5] = (h[5] + f) | 0; h[6] = (h[6] + g) | 0; h[7] = (h[7] + k) | 0;
}}
// The challenge's whole blocks are hashed once; each attempt hashes only the rest, the
// nonce's digits and the padding.
const PREFIX = new Uint8Array(CHALLENGE.length);
for (let i = 0; i < CHALLENGE.length; i++) PREFIX[i] = CHALLENGE.charCodeAt(i);
const WHOLE = PREFIX.length & ~63;
const MID = new Int32Array([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]);
for (let o = 0; o < WHOLE; o += 64) compress(MID, PREFIX, o);
const TAIL = PREFIX.subarray(WHOLE), BUF = new Uint8Array(128), H = new Int32Array(8);
// Leading zero bits of SHA-256(CHALLENGE + nonce).
function zeroBits(nonce) {{
  const digits = String(nonce);
  BUF.set(TAIL);
  let l = TAIL.length;
  for (let i = 0; i < digits.length; i++) BUF[l++] = digits.charCodeAt(i);
  const n = ((l + 9 + 63) >> 6) << 6, bits = (WHOLE + l) * 8;
  BUF.fill(0, l, n);
  BUF[l] = 0x80;
  BUF[n - 4] = bits >>> 24; BUF[n - 3] = (bits >>> 16) & 255; BUF[n - 2] = (bits >>> 8) & 255; BUF[n - 1] = bits & 255;
  H.set(MID);
  for (let o = 0; o < n; o += 64) compress(H, BUF, o);
  let zeros = 0;
  for (let i = 0; i < 8; i++) {{
    if (H[i] !== 0) return zeros + Math.clz32(H[i]);
    zeros += 32;
  }}
  return zeros;
}}
const status = document.getElementById("status");
function fail(why) {{ status.textContent = why; }}
async function answer(nonce) {{
  const reply = await fetch(location.href, {{
    method: "POST", credentials: "same-origin", cache: "no-store",
    headers: {{ "{challenge_header}": CHALLENGE, "{nonce_header}": String(nonce) }},
  }});
  if (reply.ok) location.replace(location.href);
  else fail("The answer was refused (" + reply.status + "). Reload the page to try again.");
}}
let nonce = 0;
function work() {{
  const end = nonce + 50000;
  for (; nonce < end; nonce++) {{
    if (zeroBits(nonce) >= DIFFICULTY) {{
      answer(nonce).catch((e) => fail("The answer could not be sent: " + e));
      return;
    }}
  }}
  setTimeout(work, 0);
}}
work();
</script>
</body></html>
"#,
        challenge_header = CHALLENGE_HEADER,
        nonce_header = NONCE_HEADER,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_text_is_escaped_and_the_challenge_is_embedded() {
        let text = PageText {
            title: "<b>Check</b>".into(),
            text: "a & b".into(),
            noscript: "\"quoted\"".into(),
        };
        let page = render(&text, "abc_-123", 16);
        assert!(page.contains("&lt;b&gt;Check&lt;/b&gt;"));
        assert!(page.contains("a &amp; b"));
        assert!(page.contains("&quot;quoted&quot;"));
        assert!(page.contains(r#"const CHALLENGE = "abc_-123", DIFFICULTY = 16;"#));
        assert!(!page.contains("src="), "no external assets");
    }
}
