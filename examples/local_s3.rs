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
//! Every directory under the root is a bucket (`bench` is created). s3s-fs
//! reads files 4 KiB at a time, so this measures stoker's client side at
//! modest speed, not a fast store.

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let root = args.next().unwrap_or_else(|| "/tmp/stoker-s3".into());
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9000".into());
    std::fs::create_dir_all(format!("{root}/bench"))?;
    let mut builder =
        S3ServiceBuilder::new(s3s_fs::FileSystem::new(&root).map_err(|e| format!("{e:?}"))?);
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
