import Addresses
import Testing

struct IPAddressTests {
    @Test func addressesRoundTripThroughText() {
        for text in ["0.0.0.0", "192.0.2.1", "255.255.255.255", "::", "::1", "fe80::1", "2001:db8::8:800:200c:417a", "::ffff:192.0.2.1"] {
            let address = IPAddress(text)
            #expect(address != nil, "\(text)")
            if let address { #expect(IPAddress(address.description) == address) }
        }
        #expect(IPAddress("2001:db8:1234:5678:11:2233:4455:6677")?.description == "2001:db8:1234:5678:11:2233:4455:6677")
        #expect(IPAddress("::ffff:192.0.2.1") == IPAddress("::ffff:c000:201"))
        for bad in ["", "1.2.3", "1.2.3.256", "1..2.3", "::1::", "12345::", "1:2:3:4:5:6:7:8:9", "g::1", "1.2.3.4.5"] {
            #expect(IPAddress(bad) == nil, "\(bad)")
        }
    }

    @Test func bytesRoundTripAndTransportAddressesPrintTheirBrackets() {
        let v4 = IPAddress("192.0.2.1")!
        #expect(IPAddress(bytes: v4.bytes) == v4)
        #expect(v4.isIPv4)
        let v6 = IPAddress("2001:db8::1")!
        #expect(IPAddress(bytes: v6.bytes) == v6)
        #expect(v6.bytes.count == 16)
        #expect(TransportAddress(ip: v4, port: 3478).description == "192.0.2.1:3478")
        #expect(TransportAddress(ip: v6, port: 3478).description == "[2001:db8::1]:3478")
        #expect(IPAddress("fe80::1%eth0") == IPAddress("fe80::1"))
    }
}
