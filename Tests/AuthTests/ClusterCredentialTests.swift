import Auth
import Testing

@Suite struct ClusterCredentialTests {
    let secret = ClusterCredential.derivedSecret(apiKeys: ["prod": "long-secret"])

    @Test func aCredentialOfTheMomentNamesItsNode() {
        let credential = ClusterCredential.sign(node: "node.a", unixTime: 1_000, secret: secret)
        #expect(ClusterCredential.verify(credential, now: 1_030, secret: secret) == "node.a")
    }

    @Test func staleForgedOrMalformedCredentialsAreRefused() {
        let credential = ClusterCredential.sign(node: "a", unixTime: 1_000, secret: secret)
        #expect(ClusterCredential.verify(credential, now: 1_061, secret: secret) == nil)
        #expect(ClusterCredential.verify(credential, now: 1_000, secret: ClusterCredential.derivedSecret(apiKeys: ["prod": "other"])) == nil)
        let renamed = "b" + credential.dropFirst()
        #expect(ClusterCredential.verify(String(renamed), now: 1_000, secret: secret) == nil)
        for junk in ["", "a", "a.b", "..", "a.1000.", ".1000.00", "a.x.00", credential + "0"] {
            #expect(ClusterCredential.verify(junk, now: 1_000, secret: secret) == nil)
        }
    }

    @Test func theDerivedSecretDependsOnEveryKey() {
        let one = ClusterCredential.derivedSecret(apiKeys: ["a": "s1", "b": "s2"])
        #expect(one == ClusterCredential.derivedSecret(apiKeys: ["b": "s2", "a": "s1"]))
        #expect(one != ClusterCredential.derivedSecret(apiKeys: ["a": "s1", "b": "s3"]))
    }
}
