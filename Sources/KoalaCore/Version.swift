/// The version of koala-router, as `--version` prints it and every request to Koala names in `User-Agent`.
public enum KoalaRouterVersion {
    /// Semantic version of this build.
    public static let string = "0.1.0"
}
