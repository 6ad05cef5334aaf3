public enum KoalaRouterVersion { public static let string = "0.1.0" }
