// jemalloc, not glibc's malloc: on loopback (`stoker bench`, 1 GiB, medians
// of 3 in one run) 0.81 CPU-s per GB against 0.89, at 1,140 against 1,101
// MB/s. What it keeps for reuse is trimmed to the fetch budget
// (`stoker::alloc_trim`).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    stoker::cli::main()
}
