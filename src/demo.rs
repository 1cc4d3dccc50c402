//! `pgmux demo`: a throwaway primary and replicas with pgmux in front.
pub async fn run(_port: u16, _replicas: usize) -> Result<(), String> {
    Err("demo not yet available".into())
}
