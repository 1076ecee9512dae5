import Foundation
import Hummingbird
import ParleyProtocol

/// An HTTP API error: the status of its code and a JSON body `{"error":{"code","message"}}`.
struct APIError: HTTPResponseError {
    let error: ProtocolError

    init(_ code: ErrorCode, _ message: String) { error = ProtocolError(code, message) }
    init(_ error: ProtocolError) { self.error = error }

    var status: HTTPResponse.Status { .init(code: error.code.httpStatus) }

    func response(from request: Request, context: some RequestContext) throws -> Response {
        JSONResponse.make(body, status: status)
    }

    var body: some Encodable { ErrorBody(error: .init(code: error.code, message: error.message)) }
}

/// `{"error":{"code":"…","message":"…"}}`
struct ErrorBody: Encodable {
    struct Detail: Encodable {
        let code: ErrorCode
        let message: String
    }
    let error: Detail
}

enum JSONResponse {
    static let contentType = "application/json; charset=utf-8"

    static func make(_ value: some Encodable, status: HTTPResponse.Status = .ok) -> Response {
        Response(status: status, headers: [.contentType: contentType], body: .init(byteBuffer: ByteBuffer(bytes: encode(value))))
    }

    static func encode(_ value: some Encodable) -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes, .sortedKeys]
        return (try? encoder.encode(value)) ?? Data("{}".utf8)
    }
}
