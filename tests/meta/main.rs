//! The repository against itself: the source tree's shape, the README against what it
//! documents, the deployment assets against the metrics, one version everywhere.

mod deploy_assets;
mod docs;
mod structure;
mod version;
