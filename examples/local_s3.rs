//! A local S3-protocol server (s3s-fs) for trying stoker against S3 without a
//! cloud account; the same server the integration tests embed.
//!
//! ```sh
//! cargo run --release --example local_s3 -- /tmp/s3root 127.0.0.1:9000 &
//! export AWS_ENDPOINT_URL=http://127.0.0.1:9000 AWS_ACCESS_KEY_ID=stoker AWS_SECRET_ACCESS_KEY=stoker-secret AWS_REGION=us-east-1
//! cargo run --release -- gen s3://bench/synth/
//! cargo run --release -- bench s3://bench/synth/ --json
//! ```
//!
//! Every directory under the root is a bucket (`bench` is created). GET
//! bodies are read in 1 MiB pieces (stock s3s-fs reads 4 KiB at a time and
//! caps near 150 MB/s per stream, measuring itself rather than the client),
//! so it can stand in for a fast store; the integration tests use the same
//! server. Listen on `0.0.0.0:PORT` to serve from inside a network
//! namespace. Write objects through the server (`stoker gen s3://…`), not
//! into the directory: s3s-fs hashes a file it did not write on every GET
//! (no stored ETag), a whole MD5 of the object per range request.

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

#[path = "../tests/support/large_reads.rs"]
mod large_reads;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let root = args.next().unwrap_or_else(|| "/tmp/stoker-s3".into());
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9000".into());
    std::fs::create_dir_all(format!("{root}/bench"))?;
    let inner = s3s_fs::FileSystem::new(&root).map_err(|e| format!("{e:?}"))?;
    let root_path = std::fs::canonicalize(&root)?;
    let mut builder = S3ServiceBuilder::new(large_reads::LargeReads { inner, root: root_path });
    builder.set_auth(SimpleAuth::from_single("stoker", "stoker-secret"));
    let service = builder.build();
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("S3 server on http://{addr}, root {root}, key stoker / stoker-secret");
    let http = ConnBuilder::new(TokioExecutor::new());
    loop {
        let (socket, _) = listener.accept().await?;
        let conn = http.serve_connection(TokioIo::new(socket), service.clone()).into_owned();
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}
