use bombsquad::{bombsquad, Task};

#[derive(Default)]
struct Generic<T>(T);

#[bombsquad]
impl<T: Default + Send + 'static> Task for Generic<T> {
    type Input = u8;
    type Output = u8;
    type Error = ();
    fn run(&mut self, input: u8) -> Result<u8, ()> {
        Ok(input)
    }
}

#[derive(Default)]
struct WithOptions;

#[bombsquad(timeout = "1s")]
impl Task for WithOptions {
    type Input = u8;
    type Output = u8;
    type Error = ();
    fn run(&mut self, input: u8) -> Result<u8, ()> {
        Ok(input)
    }
}

#[bombsquad]
impl WithOptions {
    fn helper(&self) {}
}

fn main() {}
