use std::borrow::Cow;

use bombsquad::bombsquad;

#[bombsquad]
fn first_word(text: &str) -> &str {
    text.split(' ').next().unwrap_or("")
}

#[bombsquad]
fn trimmed(text: &str) -> Cow<'_, str> {
    Cow::Borrowed(text.trim())
}

fn main() {}
