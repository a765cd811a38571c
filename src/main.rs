// jemalloc, not glibc's malloc: on loopback (`stoker bench`, 1 GiB, medians
// of 3 in one run) 0.81 CPU-s per GB against 0.89, at 1,140 against 1,101
// MB/s. Resident memory under load is the same with either (~1.8x the
// fetch budget in scripts/soak: freed part buffers are kept for reuse).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    stoker::cli::main()
}
