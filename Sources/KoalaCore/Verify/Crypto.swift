import COpenSSL

/// HMAC, digests and constant-time comparison, all through OpenSSL's libcrypto.
package enum Crypto {
    /// A digest algorithm of OpenSSL's libcrypto.
    package enum Algorithm: String, Sendable, CaseIterable {
        case sha1, sha256, sha512

        var md: OpaquePointer? {
            switch self {
            case .sha1: EVP_sha1()
            case .sha256: EVP_sha256()
            case .sha512: EVP_sha512()
            }
        }

        var digestLength: Int {
            switch self {
            case .sha1: 20
            case .sha256: 32
            case .sha512: 64
            }
        }
    }

    /// HMAC of `data` with `key`.
    package static func hmac(_ algorithm: Algorithm, key: some ContiguousBytesLike, data: some ContiguousBytesLike) -> [UInt8] {
        key.withBytes { keyBytes in
            // OpenSSL needs a valid pointer even for an empty key: lend it one that lives through the call.
            guard let keyPointer = keyBytes.baseAddress, !keyBytes.isEmpty else {
                return [UInt8(0)].withUnsafeBytes { hmac(algorithm, key: $0.baseAddress!, keyLength: 0, data: data) }
            }
            return hmac(algorithm, key: keyPointer, keyLength: keyBytes.count, data: data)
        }
    }

    private static func hmac(_ algorithm: Algorithm, key: UnsafeRawPointer, keyLength: Int, data: some ContiguousBytesLike) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var outLength: UInt32 = 0
        data.withBytes { dataBytes in
            out.withUnsafeMutableBufferPointer { outBuffer in
                _ = HMAC(algorithm.md, key, Int32(keyLength), dataBytes.baseAddress?.assumingMemoryBound(to: UInt8.self), dataBytes.count,
                         outBuffer.baseAddress, &outLength)
            }
        }
        return Array(out.prefix(Int(outLength)))
    }

    /// Message digest of `data`.
    package static func digest(_ algorithm: Algorithm, _ data: some ContiguousBytesLike) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var outLength: UInt32 = 0
        data.withBytes { dataBytes in
            out.withUnsafeMutableBufferPointer { outBuffer in
                _ = EVP_Digest(dataBytes.baseAddress, dataBytes.count, outBuffer.baseAddress, &outLength, algorithm.md, nil)
            }
        }
        return Array(out.prefix(Int(outLength)))
    }

    /// Calls `body` with the digest of `data`, held on the stack (no array is allocated for it).
    package static func withDigest<Result>(_ algorithm: Algorithm, _ data: some ContiguousBytesLike,
                                           _ body: (UnsafeBufferPointer<UInt8>) -> Result) -> Result {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: Int(EVP_MAX_MD_SIZE)) { out in
            var outLength: UInt32 = 0
            data.withBytes { dataBytes in
                _ = EVP_Digest(dataBytes.baseAddress, dataBytes.count, out.baseAddress, &outLength, algorithm.md, nil)
            }
            return body(UnsafeBufferPointer(rebasing: out[..<Int(outLength)]))
        }
    }

    /// Constant-time equality (`CRYPTO_memcmp`). Lengths are public; contents are not.
    package static func constantTimeEquals(_ a: some ContiguousBytesLike, _ b: some ContiguousBytesLike) -> Bool {
        a.withBytes { aBytes in
            b.withBytes { bBytes in
                guard aBytes.count == bBytes.count else { return false }
                guard aBytes.count > 0 else { return true }
                return CRYPTO_memcmp(aBytes.baseAddress, bBytes.baseAddress, aBytes.count) == 0
            }
        }
    }
}

/// Anything whose bytes can be read contiguously without copying.
package protocol ContiguousBytesLike {
    /// Calls `body` with the bytes, valid only during the call.
    func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R
}

extension Array: ContiguousBytesLike where Element == UInt8 {
    package func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try self.withUnsafeBytes(body)
    }
}

extension ArraySlice: ContiguousBytesLike where Element == UInt8 {
    package func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try self.withUnsafeBytes(body)
    }
}

extension String: ContiguousBytesLike {
    package func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        var copy = self
        return try copy.withUTF8 { try body(UnsafeRawBufferPointer($0)) }
    }
}
