import Addresses
import STUN
import Testing
@testable import WebRTC

@Suite struct ICELiteAgentTests {
    static let local = ICECredentials(ufrag: "srvU", password: "server-password-0123456789")
    static let remote = ICECredentials(ufrag: "cliU", password: "client-password-0123456789")
    static let peer = TransportAddress(ip: IPAddress("127.0.0.1")!, port: 50_000)
    static let second = TransportAddress(ip: IPAddress("::1")!, port: 50_001)

    /// A check as a controlling full agent sends it.
    static func check(
        username: String? = "srvU:cliU", password: String = local.password, useCandidate: Bool = false,
        extra: STUNAttributeType? = nil, fingerprint: Bool = true
    ) -> STUNMessage {
        var builder = STUNMessageBuilder(type: .bindingRequest, transactionID: .random())
        if let username { builder.append(.username, string: username) }
        builder.append(.priority, uint32: 0x6E00_01FF)
        builder.append(.iceControlling, uint64: 42)
        if useCandidate { builder.appendFlag(.useCandidate) }
        if let extra { builder.append(extra, [0, 0, 0, 0]) }
        builder.appendMessageIntegrity(key: STUNIntegrity.shortTermKey(password: password))
        if fingerprint { builder.appendFingerprint() }
        return try! STUNMessage(parsing: builder.bytes)
    }

    @Test func aValidCheckIsAnsweredWithTheMappedAddressAndIntegrity() throws {
        var agent = ICELiteAgent(local: Self.local, remote: Self.remote, now: 0)
        let request = Self.check()
        guard case .respond(let bytes, let nominated) = agent.handle(request, from: Self.peer, now: 1) else {
            Issue.record("no response")
            return
        }
        #expect(!nominated)
        let response = try STUNMessage(parsing: bytes)
        #expect(response.type == .bindingSuccess)
        #expect(response.transactionID == request.transactionID)
        #expect(response.xorAddress(.xorMappedAddress) == Self.peer)
        #expect(response.hasValidIntegrity(key: STUNIntegrity.shortTermKey(password: Self.local.password)))
        #expect(response.hasValidFingerprint)
        #expect(agent.selectedAddress == nil)
        #expect(agent.accepts(Self.peer))
        #expect(!agent.accepts(Self.second))
    }

    @Test func useCandidateNominatesAndALaterNominationMovesThePair() {
        var agent = ICELiteAgent(local: Self.local, remote: Self.remote, now: 0)
        #expect(agent.handle(Self.check(useCandidate: true), from: Self.peer, now: 1).nominated == true)
        #expect(agent.selectedAddress == Self.peer)
        #expect(agent.handle(Self.check(useCandidate: true), from: Self.peer, now: 2).nominated == false)
        #expect(agent.handle(Self.check(useCandidate: true), from: Self.second, now: 3).nominated == true)
        #expect(agent.selectedAddress == Self.second)
    }

    @Test func checksWithBadCredentialsAreRejectedAndChangeNothing() {
        var agent = ICELiteAgent(local: Self.local, remote: Self.remote, now: 0)
        let cases: [(STUNMessage, ICELiteAgent.DropReason)] = [
            (Self.check(username: nil, useCandidate: true), .missingUsername),
            (Self.check(username: "srvU:other", useCandidate: true), .wrongUsername),
            (Self.check(username: "nope:cliU", useCandidate: true), .wrongUsername),
            (Self.check(username: "srvUcliU", useCandidate: true), .wrongUsername),
            (Self.check(password: "not-the-password", useCandidate: true), .badIntegrity),
            (Self.check(useCandidate: true, extra: STUNAttributeType(rawValue: 0x0077)), .unknownAttribute),
        ]
        for (request, reason) in cases {
            guard case .reject(let bytes, let got) = agent.handle(request, from: Self.peer, now: 1) else {
                Issue.record("\(reason) was not rejected")
                continue
            }
            #expect(got == reason)
            let response = try? STUNMessage(parsing: bytes)
            #expect(response?.type == .bindingError)
            #expect(response?.errorCode?.code == (reason == .missingUsername ? 400 : reason == .unknownAttribute ? 420 : 401))
        }
        #expect(agent.selectedAddress == nil)
        #expect(!agent.accepts(Self.peer))
        #expect(agent.handle(Self.check(fingerprint: false), from: Self.peer, now: 1) == .drop(.badFingerprint))
    }

    @Test func checksBeforeTheRemoteDescriptionAreAuthenticatedByOurPassword() {
        var agent = ICELiteAgent(local: Self.local, remote: nil, now: 0)
        #expect(agent.handle(Self.check(username: "srvU:anything", useCandidate: true), from: Self.peer, now: 1).nominated == true)
        agent.setRemote(Self.remote)
        #expect(agent.handle(Self.check(username: "srvU:anything"), from: Self.peer, now: 2).nominated == nil)
    }

    @Test func consentExpiresWithoutChecksOrMedia() {
        let second: UInt64 = 1_000_000_000
        var agent = ICELiteAgent(local: Self.local, remote: Self.remote, consentTimeoutNanoseconds: 30 * second, now: 0)
        _ = agent.handle(Self.check(useCandidate: true), from: Self.peer, now: 1 * second)
        #expect(!agent.consentExpired(now: 31 * second))
        agent.noteAuthenticatedTraffic(now: 20 * second)
        #expect(!agent.consentExpired(now: 50 * second))
        #expect(agent.consentExpired(now: 50 * second + 1))
    }

    @Test func restartTakesNewCredentialsAndKeepsThePairUntilRenominated() {
        var agent = ICELiteAgent(local: Self.local, remote: Self.remote, now: 0)
        _ = agent.handle(Self.check(useCandidate: true), from: Self.peer, now: 1)
        let newLocal = ICECredentials(ufrag: "srv2", password: "another-server-password-01")
        let newRemote = ICECredentials(ufrag: "cli2", password: "another-client-password-01")
        agent.restart(local: newLocal, remote: newRemote)
        #expect(agent.selectedAddress == Self.peer)
        #expect(agent.handle(Self.check(), from: Self.second, now: 2).nominated == nil, "old credentials no longer work")
        let renominate = Self.check(username: "srv2:cli2", password: newLocal.password, useCandidate: true)
        #expect(agent.handle(renominate, from: Self.second, now: 3).nominated == true)
        #expect(agent.selectedAddress == Self.second)
    }

    @Test func credentialsAreLongEnoughAndDistinct() {
        var generator = SystemRandomNumberGenerator()
        let a = ICECredentials.random(using: &generator)
        let b = ICECredentials.random(using: &generator)
        #expect(a.ufrag.count >= 4 && a.password.count >= 22)
        #expect(a != b)
    }
}

extension ICELiteAgent.Outcome {
    /// Whether the check was answered with success, and if so whether it nominated.
    var nominated: Bool? {
        if case .respond(_, let nominated) = self { nominated } else { nil }
    }
}
