//! Compiles the daemon's contract (`proto/stoker/v1`) with a vendored
//! `protoc`, so no system install is needed; `PROTOC` wins when set.

// `set_var` is unsafe in edition 2024; a build script is single-threaded.
#![allow(unsafe_code)]

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        // SAFETY: build scripts are single-threaded; nothing reads the
        // environment concurrently.
        unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    }
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-env-changed=PROTOC");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&["proto/stoker/v1/stoker.proto"], &["proto"])?;
    Ok(())
}
