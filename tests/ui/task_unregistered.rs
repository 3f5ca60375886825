use bombsquad::{Task, Worker};

#[derive(Default)]
struct Unregistered;

impl Task for Unregistered {
    type Input = u8;
    type Output = u8;
    type Error = ();
    fn run(&mut self, input: u8) -> Result<u8, ()> {
        Ok(input)
    }
}

fn main() {
    let _ = Worker::<Unregistered>::spawn();
}
