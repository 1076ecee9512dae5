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
        JSONResponse.make(ErrorBody(error: .init(code: error.code, message: error.message)), status: status)
    }
}

/// `{"error":{"code":"…","message":"…"}}`
private struct ErrorBody: Encodable {
    struct Detail: Encodable {
        let code: ErrorCode
        let message: String
    }
    let error: Detail
}

enum JSONResponse {
    static func make(_ value: some Encodable, status: HTTPResponse.Status = .ok) -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes, .sortedKeys]
        let data = (try? encoder.encode(value)) ?? Data("{}".utf8)
        return Response(
            status: status, headers: [.contentType: "application/json; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}
