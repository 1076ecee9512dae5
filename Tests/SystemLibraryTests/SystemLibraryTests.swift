import CParleyOpenSSL
import CParleyOpus
import CParleySRTP
import Testing

/// The system libraries the media plane needs are installed, found by pkg-config and linkable.
@Suite struct SystemLibraryTests {
    @Test func openSSLIsVersion3() {
        let version = String(cString: parley_openssl_version())
        #expect(version.hasPrefix("OpenSSL 3."), "got \(version)")
    }

    // libsrtp2 is the reference SRTP implementation Parley's own is checked against (WebRTCTests).
    @Test func libsrtpIsVersion2() {
        let version = String(cString: srtp_get_version_string())
        #expect(version.contains("2."), "got \(version)")
    }

    @Test func libopusReportsAVersion() {
        let version = String(cString: opus_get_version_string())
        #expect(version.hasPrefix("libopus 1."), "got \(version)")
    }
}
