/// Why a description was refused: the line (1-based), its text, and what is wrong with it, so
/// a `bad_request` names the problem.
public struct SDPError: Error, Equatable, Sendable, CustomStringConvertible {
    public let line: Int
    public let text: String
    public let reason: String

    public init(line: Int, text: String, reason: String) {
        self.line = line
        self.text = String(text.prefix(120))
        self.reason = reason
    }

    public var description: String {
        line > 0 ? "line \(line) \"\(text)\": \(reason)" : reason
    }
}
