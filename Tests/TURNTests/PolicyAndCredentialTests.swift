import Addresses
import STUN
import Testing
@testable import TURN

@Suite struct PeerPolicyTests {
    let policy = PeerPolicy()

    @Test(arguments: [
        "127.0.0.1", "127.255.255.254", "0.0.0.0", "0.1.2.3", "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1",
        "100.64.0.1", "100.127.255.255", "169.254.169.254", "224.0.0.1", "239.255.255.250", "255.255.255.255", "240.0.0.1",
        "::", "::1", "fe80::1", "febf::1", "fc00::1", "fd12:3456::1", "ff02::1",
        // IPv6 spellings of denied IPv4 addresses (the CVE-2020-26262 family)
        "::ffff:127.0.0.1", "::ffff:0.0.0.0", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "::ffff:192.168.0.1",
        "::127.0.0.1", "::ffff:0:127.0.0.1", "64:ff9b::7f00:1", "64:ff9b::a00:1", "2002:7f00:1::1", "2002:c0a8:101::",
        "::ffff:7f00:1", "0:0:0:0:0:ffff:127.0.0.1",
        // Teredo, the local-use NAT64 prefix, documentation and TEST-NET ranges, broadcast
        "2001::1", "2001:0:4136:e378:8000:63bf:3fff:fdd2", "64:ff9b:1::1", "64:ff9b:1:ffff::a00:1", "2001:db8::1",
        "192.0.2.1", "198.51.100.7", "203.0.113.200", "255.255.255.255",
    ])
    func deniedByDefault(_ text: String) throws {
        let address = try #require(IPAddress(text))
        #expect(policy.decision(for: address) == .denied, "\(text) must be denied")
    }

    @Test(arguments: ["8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1", "2001:4860:4860::8888", "::ffff:8.8.8.8", "64:ff9b::808:808"])
    func publicAddressesAreAllowed(_ text: String) throws {
        #expect(policy.decision(for: try #require(IPAddress(text))) == .allowed)
    }

    /// A Teredo address carries its client's IPv4 (inverted) in its last 32 bits: an operator who
    /// opens Teredo still cannot reach a denied IPv4 through it.
    @Test func theIPv4InsideATeredoAddressIsCheckedAgainstTheIPv4Rules() throws {
        let teredo = PeerPolicy(allowed: [try #require(IPRange("2001::/32"))])
        // Client 8.8.8.8 inverted is f7f7:f7f7; client 127.0.0.1 inverted is 80ff:fffe.
        #expect(teredo.decision(for: try #require(IPAddress("2001:0:4136:e378:8000:63bf:f7f7:f7f7"))) == .allowed)
        #expect(teredo.decision(for: try #require(IPAddress("2001:0:4136:e378:8000:63bf:80ff:fffe"))) == .denied)
        #expect(PeerPolicy.embeddedIPv4(try #require(IPAddress("2001:0:4136:e378:8000:63bf:80ff:fffe"))) == IPAddress("127.0.0.1"))
    }

    @Test func allowedRangesOpenAddressesAndTheirMappedForms() throws {
        let open = PeerPolicy(allowed: [try #require(IPRange("127.0.0.0/8"))])
        #expect(open.decision(for: IPAddress("127.0.0.1")!) == .allowed)
        #expect(open.decision(for: IPAddress("::ffff:127.0.0.1")!) == .allowed)
        #expect(open.decision(for: IPAddress("10.0.0.1")!) == .denied)
        #expect(open.decision(for: IPAddress("::1")!) == .denied)
        // IPv6 loopback opened on its own (a test on ::1): not read as the IPv4 0.0.0.1.
        let six = PeerPolicy(allowed: [try #require(IPRange("::1/128"))])
        #expect(six.decision(for: IPAddress("::1")!) == .allowed)
        #expect(six.decision(for: IPAddress("::2")!) == .denied, "::0.0.0.2 is IPv4-compatible 0.0.0.2")
    }

    @Test func extraDeniedRangesCloseMore() throws {
        let closed = PeerPolicy(extraDenied: [try #require(IPRange("203.0.113.0/24"))])
        #expect(closed.decision(for: IPAddress("203.0.113.7")!) == .denied)
        #expect(closed.decision(for: IPAddress("::ffff:203.0.113.7")!) == .denied)
    }

    @Test func ownMediaPortsStayReachableOnADeniedAddress() {
        let media = TransportAddress(ip: IPAddress("127.0.0.1")!, port: 7882)
        let policy = PeerPolicy(mediaAddresses: [media])
        let decision = policy.decision(for: media.ip)
        #expect(decision == .mediaPortsOnly)
        #expect(policy.permits(media, under: decision))
        #expect(!policy.permits(TransportAddress(ip: media.ip, port: 22), under: decision))
        #expect(policy.decision(for: IPAddress("127.0.0.2")!) == .denied)
    }

    @Test func rangesParseAndMatch() throws {
        #expect(IPRange("10.0.0.0/33") == nil)
        #expect(IPRange("nonsense") == nil)
        let v6 = try #require(IPRange("2001:db8::/32"))
        #expect(v6.contains(IPAddress("2001:db8:ffff::1")!))
        #expect(!v6.contains(IPAddress("2001:db9::1")!))
        #expect(!v6.contains(IPAddress("10.0.0.1")!))
        #expect(try #require(IPRange("fe80::/10")).contains(IPAddress("febf:ffff::")!))
        #expect(try #require(IPRange("::1")).prefixLength == 128)
    }
}

@Suite struct CredentialTests {
    let credentials = TURNCredentials(realm: "parley", sharedSecret: Array("north".utf8), staticUsers: ["ninefingers": "youhavetoberealistic"])

    @Test func staticUsersGetTheLongTermKey() {
        let lookup = credentials.lookup(username: "ninefingers", unixTime: 1)
        #expect(lookup == .key(STUNIntegrity.longTermKey(username: "ninefingers", realm: "parley", password: "youhavetoberealistic"), identity: "ninefingers"))
    }

    /// coturn's REST scheme: the password is base64(HMAC-SHA1(secret, username)).
    @Test func restCredentialsMatchCoturnsScheme() {
        // HMAC-SHA1("north", "1700000000:alice"), computed independently with Python's hmac.
        let password = TURNCredentials.restPassword(secret: Array("north".utf8), username: "1700000000:alice")
        #expect(password == "Cd/49soE35ICqcJF/bCTn8Z4OyE=")
        let made = credentials.restCredential(identity: "alice", expiry: 1_700_000_000)
        #expect(made.username == "1700000000:alice")
        #expect(made.password == password)
        let lookup = credentials.lookup(username: made.username, unixTime: 1_699_999_999)
        #expect(lookup == .key(STUNIntegrity.longTermKey(username: made.username, realm: "parley", password: password), identity: "alice"))
    }

    @Test func expiredAndUnknownUsersAreRefused() {
        #expect(credentials.lookup(username: "1700000000:alice", unixTime: 1_700_000_001) == .expired)
        #expect(credentials.lookup(username: "mallory", unixTime: 1) == .unknownUser)
        let noSecret = TURNCredentials(realm: "parley", sharedSecret: [])
        #expect(noSecret.lookup(username: "9999999999:alice", unixTime: 1) == .unknownUser)
    }

    /// A request signed with the long-term key verifies; with the wrong password it does not.
    @Test func longTermIntegrityVerifies() throws {
        let key = STUNIntegrity.longTermKey(username: "ninefingers", realm: "parley", password: "youhavetoberealistic")
        var builder = STUNMessageBuilder(type: STUNMessageType(method: .allocate, class: .request), transactionID: .random())
        builder.append(.username, string: "ninefingers")
        builder.append(.realm, string: "parley")
        builder.append(.nonce, string: "abc")
        builder.appendMessageIntegrity(key: key)
        let message = try STUNMessage(parsing: builder.bytes)
        #expect(message.hasValidIntegrity(key: key))
        #expect(!message.hasValidIntegrity(key: STUNIntegrity.longTermKey(username: "ninefingers", realm: "parley", password: "wrong")))
    }
}

@Suite struct NonceTests {
    let issuer = NonceIssuer(key: Array(repeating: 7, count: 32), lifetimeSeconds: 600)
    let client = IPAddress("198.51.100.7")!

    @Test func aNonceIsFreshUntilItsLifetimeEnds() {
        let nonce = issuer.issue(for: client, unixTime: 1_000_000)
        #expect(issuer.isValid(nonce, for: client, unixTime: 1_000_000))
        #expect(issuer.isValid(nonce, for: client, unixTime: 1_000_599))
        #expect(!issuer.isValid(nonce, for: client, unixTime: 1_000_600))
    }

    @Test func aNonceIsBoundToItsClientAndCannotBeForged() {
        let nonce = issuer.issue(for: client, unixTime: 1_000_000)
        #expect(!issuer.isValid(nonce, for: IPAddress("198.51.100.8")!, unixTime: 1_000_000))
        #expect(!issuer.isValid("f4240-000000000000000000000000", for: client, unixTime: 1_000_000))
        #expect(!issuer.isValid("garbage", for: client, unixTime: 1_000_000))
        let other = NonceIssuer(key: Array(repeating: 8, count: 32), lifetimeSeconds: 600)
        #expect(!other.isValid(nonce, for: client, unixTime: 1_000_000))
    }

    @Test func lifetimesFollowRFC8656() {
        let configuration = TURNConfiguration(credentials: TURNCredentials(realm: "r", sharedSecret: []))
        #expect(configuration.lifetime(requested: nil) == 600)
        #expect(configuration.lifetime(requested: 30) == 600)
        #expect(configuration.lifetime(requested: 1200) == 1200)
        #expect(configuration.lifetime(requested: 99999) == 3600)
    }
}

/// The pre-authentication rate table forgets a source once its allowance has refilled: such an
/// entry is the same as none, so the table holds only the sources seen lately.
@Suite struct AllowanceTests {
    @Test func aRefilledAllowanceIsFullAndCanBeForgotten() {
        var allowance = Allowance(perSecond: 20, burst: 40, now: 0)
        #expect(allowance.isFull(now: 0))
        let taken = (0..<41).filter { _ in allowance.take(now: 0) }.count
        #expect(taken == 40)
        #expect(!allowance.isFull(now: 1_000_000_000), "20 of 40 back after a second")
        #expect(allowance.isFull(now: 2_000_000_000))
    }
}
