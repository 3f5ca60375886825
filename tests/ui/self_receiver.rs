use bombsquad::bombsquad;

struct Counter(i64);

impl Counter {
    #[bombsquad]
    fn doubled(&self) -> i64 {
        self.0 * 2
    }
}

fn main() {
    let _ = Counter(1).doubled();
}
