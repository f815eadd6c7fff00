//! Provisional rendering until the real one lands.
use crate::report::Report;
impl Report {
    pub fn to_table(&self) -> String {
        format!("{self:#?}\n")
    }
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"scenario": self.scenario, "ok": self.ok, "counts": self.counts})
    }
    pub fn write_html(&self, dir: &std::path::Path) -> std::io::Result<std::path::PathBuf> {
        Ok(dir.join("index.html"))
    }
}
