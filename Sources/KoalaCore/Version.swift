/// The version of koala-router, as `--version` prints it and every request to Koala names in `User-Agent`.
package enum KoalaRouterVersion {
    /// Semantic version of this build.
    package static let string = "0.1.0"
}
