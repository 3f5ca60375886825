struct NotSerde;

fn main() {
    let _ = bombsquad::fork(|| NotSerde);
}
