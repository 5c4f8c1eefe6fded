//! Embeds an rpath to libtorch's lib directory, so `cordon-inference` and this crate's tests
//! run without LD_LIBRARY_PATH. torch-sys reports the directory as `DEP_TCH_LIBTORCH_LIB`
//! (set when libtorch comes from a Python environment, `LIBTORCH_USE_PYTORCH=1`).
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
