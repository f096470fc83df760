//! Embedding models. (Placeholder for the `embed` branch, which brings the in-process models;
//! only the trait the knowledge module codes against lives here until it is merged.)

/// A sentence embedder. Outputs are L2-normalised.
pub trait Embedder: Send + Sync {
    fn id(&self) -> &str;
    fn dim(&self) -> usize;
    fn embed(&self, texts: &[&str]) -> crate::Result<Vec<Vec<f32>>>;
}
