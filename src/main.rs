//! The `tether` command line: argument parsing and glue between the library modules.

fn main() {
    println!("tether");
}
