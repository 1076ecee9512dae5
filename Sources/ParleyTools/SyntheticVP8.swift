import ParleyClient
/// A pure VP8 bitstream writer (RFC 6386) for the synthetic camera: no encoder library, no I/O. It
/// codes a mid-gray picture with a colored 16x16 square that moves one macroblock per frame. Every
/// macroblock is either predicted with no residual (intra on keyframes, the last frame with a zero
/// motion vector on interframes) or, for the square, intra-predicted with DC-only coefficients, so
/// decoders reconstruct exact pixel values.

/// VP8's boolean entropy encoder (RFC 6386 section 7.3), the inverse of the decoder's bool decoder.
struct VP8BoolEncoder {
    private(set) var output: [UInt8] = []
    private var range: UInt32 = 255
    /// The low end of the coded interval; bits above the next output byte wait for a carry.
    private var low: UInt32 = 0
    private var shiftsUntilOutput = 24

    /// Writes `bit`, which is false with probability `probability` / 256.
    mutating func write(_ bit: Bool, probability: UInt8) {
        let split = 1 + (((range - 1) * UInt32(probability)) >> 8)
        if bit {
            low &+= split
            range -= split
        } else {
            range = split
        }
        while range < 128 {
            range <<= 1
            if low & 0x8000_0000 != 0 { propagateCarry() }
            low <<= 1
            shiftsUntilOutput -= 1
            if shiftsUntilOutput == 0 {
                output.append(UInt8(truncatingIfNeeded: low >> 24))
                low &= 0x00FF_FFFF
                shiftsUntilOutput = 8
            }
        }
    }

    /// An unsigned `bits`-bit literal, most significant bit first (the spec's L(n)).
    mutating func writeLiteral(_ value: Int, bits: Int) {
        for bit in stride(from: bits - 1, through: 0, by: -1) { write((value >> bit) & 1 == 1, probability: 128) }
    }

    /// The branches to `value`'s leaf in `tree`, each with the probability of its node; with
    /// `skippingRoot` the first branch is left out (a coefficient token after a zero cannot be EOB).
    mutating func write(_ value: Int, in tree: VP8Tree, probabilities: ArraySlice<UInt8>, skippingRoot: Bool = false) {
        let path = tree.path(to: value)
        precondition(!skippingRoot || path.first.map { $0.node == 0 && $0.bit } == true, "the root branch cannot be skipped")
        for step in path.dropFirst(skippingRoot ? 1 : 0) {
            write(step.bit, probability: probabilities[probabilities.startIndex + step.node >> 1])
        }
    }

    /// Flushes the interval's low end, so a decoder that reads zeros past it stays inside the interval.
    mutating func finish() -> [UInt8] {
        if low & (1 << (32 - shiftsUntilOutput)) != 0 { propagateCarry() }
        let rest = low << shiftsUntilOutput
        for index in 0..<4 { output.append(UInt8(truncatingIfNeeded: rest >> (24 - 8 * UInt32(index)))) }
        return output
    }

    private mutating func propagateCarry() {
        // The coded value stays below 1, so a carry always stops at a byte under 255.
        var index = output.count - 1
        while output[index] == 255 {
            output[index] = 0
            index -= 1
        }
        output[index] += 1
    }
}

/// A VP8 coding tree in the spec's array form (RFC 6386 section 8.1): positive entries are the
/// index of the next node pair, others are leaves holding the negated value. Node `n` uses
/// probability `n >> 1`.
struct VP8Tree: Sendable {
    struct Step: Sendable {
        var node: Int
        var bit: Bool
    }
    private let paths: [Int: [Step]]

    init(_ entries: [Int]) {
        var paths: [Int: [Step]] = [:]
        func walk(_ node: Int, _ prefix: [Step]) {
            for bit in [false, true] {
                let entry = entries[node + (bit ? 1 : 0)]
                let path = prefix + [Step(node: node, bit: bit)]
                if entry > 0 { walk(entry, path) } else { paths[-entry] = path }
            }
        }
        walk(0, [])
        self.paths = paths
    }

    func path(to value: Int) -> [Step] {
        guard let path = paths[value] else { preconditionFailure("\(value) is not a leaf of the tree") }
        return path
    }
}

/// VP8's prediction modes (RFC 6386 sections 8 and 16), numbered as the spec's trees use them.
enum VP8Mode {
    /// DC_PRED, V_PRED, H_PRED, TM_PRED, B_PRED.
    enum Intra: Int, Sendable { case dc = 0, vertical, horizontal, trueMotion, subblocks }
    /// mv_nearest ... mv_split follow the five luma modes.
    enum Inter: Int, Sendable { case nearest = 5, near, zero, new, split }
}

/// How one macroblock is coded.
struct VP8Macroblock: Sendable {
    enum Prediction: Sendable, Equatable {
        case intra(luma: VP8Mode.Intra, chroma: VP8Mode.Intra)
        /// The last frame's macroblock at the same place (ZEROMV from LAST).
        case lastFrameUnmoved
    }
    /// DC levels of a macroblock's residual: the second-order luma block's DC (spread over the 16
    /// luma blocks by the inverse Walsh-Hadamard transform) and one DC for each chroma block.
    struct DCLevels: Sendable, Equatable {
        var y2: Int
        var u: Int
        var v: Int
    }
    var prediction: Prediction
    /// nil: no coefficients (the macroblock is coded as skipped).
    var residual: DCLevels?
}

/// Writes whole VP8 frames from a macroblock plan.
struct VP8FrameWriter: Sendable {
    let width: Int
    let height: Int
    var columns: Int { (width + 15) / 16 }
    var rows: Int { (height + 15) / 16 }
    /// The quantizer index of every block. At 0, dc_q is 4: a second-order DC level of 8 x n adds n
    /// to every luma pixel, a chroma DC level of 2 x n adds n to its chroma pixels, with no rounding.
    static let quantizerIndex = 0
    static let lumaLevelPerPixelStep = 8
    static let chromaLevelPerPixelStep = 2

    init(width: Int, height: Int) {
        precondition((1..<(1 << 14)).contains(width) && (1..<(1 << 14)).contains(height), "VP8 sizes are 14-bit")
        self.width = width
        self.height = height
    }

    /// The frame for `macroblocks` (raster order), followed by zero bytes up to `size`. Decoders
    /// never read those: they sit after the last token the only DCT partition holds.
    func frame(keyframe: Bool, macroblocks: [VP8Macroblock], size: Int) -> [UInt8] {
        precondition(macroblocks.count == columns * rows, "one entry per macroblock")
        var header = VP8BoolEncoder()
        var tokens = VP8BoolEncoder()
        let coded = macroblocks.count { $0.residual != nil }
        let intra = macroblocks.count { $0.prediction != .lastFrameUnmoved }
        precondition(!keyframe || intra == macroblocks.count, "keyframes predict from nothing but themselves")
        let probabilitySkipFalse = Self.probabilityOfZero(coded, of: macroblocks.count)
        let probabilityIntra = Self.probabilityOfZero(intra, of: macroblocks.count)
        let probabilityLast = Self.probabilityOfZero(macroblocks.count - intra, of: macroblocks.count - intra)

        // Frame header (RFC 6386 section 19.2).
        if keyframe {
            header.writeLiteral(0, bits: 1)  // color_space: YUV
            header.writeLiteral(0, bits: 1)  // clamping_type: decoders clamp
        }
        header.writeLiteral(0, bits: 1)  // segmentation_enabled
        header.writeLiteral(0, bits: 1)  // filter_type: normal
        header.writeLiteral(0, bits: 6)  // loop_filter_level 0: no filter, the square keeps sharp edges
        header.writeLiteral(0, bits: 3)  // sharpness_level
        header.writeLiteral(0, bits: 1)  // loop_filter_adj_enable
        header.writeLiteral(0, bits: 2)  // log2_nbr_of_dct_partitions: one token partition
        header.writeLiteral(Self.quantizerIndex, bits: 7)  // y_ac_qi
        for _ in 0..<5 { header.writeLiteral(0, bits: 1) }  // no y_dc, y2_dc, y2_ac, uv_dc, uv_ac deltas
        if keyframe {
            header.writeLiteral(1, bits: 1)  // refresh_entropy_probs
        } else {
            header.writeLiteral(0, bits: 1)  // refresh_golden_frame
            header.writeLiteral(0, bits: 1)  // refresh_alternate_frame
            header.writeLiteral(0, bits: 2)  // copy_buffer_to_golden: none
            header.writeLiteral(0, bits: 2)  // copy_buffer_to_alternate: none
            header.writeLiteral(0, bits: 1)  // sign_bias_golden
            header.writeLiteral(0, bits: 1)  // sign_bias_alternate
            header.writeLiteral(1, bits: 1)  // refresh_entropy_probs
            header.writeLiteral(1, bits: 1)  // refresh_last
        }
        for probability in VP8Tables.coefficientUpdateProbabilities { header.write(false, probability: probability) }
        header.writeLiteral(1, bits: 1)  // mb_no_skip_coeff: skipped macroblocks carry no tokens
        header.writeLiteral(Int(probabilitySkipFalse), bits: 8)
        if !keyframe {
            header.writeLiteral(Int(probabilityIntra), bits: 8)
            header.writeLiteral(Int(probabilityLast), bits: 8)
            header.writeLiteral(128, bits: 8)  // prob_gf: no macroblock uses the golden frame
            header.writeLiteral(0, bits: 1)  // intra_16x16_prob_update_flag
            header.writeLiteral(0, bits: 1)  // intra_chroma_prob_update_flag
            for probability in VP8Tables.motionVectorUpdateProbabilities { header.write(false, probability: probability) }
        }

        // Per-macroblock headers (section 19.3) in the first partition, tokens (section 13) in the second.
        var contexts = TokenContexts(columns: columns)
        for row in 0..<rows {
            contexts.startRow()
            for column in 0..<columns {
                let macroblock = macroblocks[row * columns + column]
                header.write(macroblock.residual == nil, probability: probabilitySkipFalse)
                switch (keyframe, macroblock.prediction) {
                case (true, .intra(let luma, let chroma)):
                    header.write(luma.rawValue, in: VP8Tables.keyframeLumaModeTree, probabilities: VP8Tables.keyframeLumaModeProbabilities[...])
                    header.write(chroma.rawValue, in: VP8Tables.chromaModeTree, probabilities: VP8Tables.keyframeChromaModeProbabilities[...])
                case (false, .intra(let luma, let chroma)):
                    header.write(false, probability: probabilityIntra)  // is_inter_mb
                    header.write(luma.rawValue, in: VP8Tables.lumaModeTree, probabilities: VP8Tables.lumaModeProbabilities[...])
                    header.write(chroma.rawValue, in: VP8Tables.chromaModeTree, probabilities: VP8Tables.chromaModeProbabilities[...])
                case (false, .lastFrameUnmoved):
                    header.write(true, probability: probabilityIntra)  // is_inter_mb
                    header.write(false, probability: probabilityLast)  // the last frame, not golden or altref
                    let counts = nearMotionVectorCounts(row: row, column: column, macroblocks: macroblocks)
                    let probabilities = (0..<4).map { VP8Tables.modeContexts[counts[$0]][$0] }
                    header.write(VP8Mode.Inter.zero.rawValue, in: VP8Tables.motionVectorReferenceTree, probabilities: probabilities[...])
                case (true, .lastFrameUnmoved):
                    preconditionFailure("checked above")
                }
                if let residual = macroblock.residual {
                    contexts.write(residual, column: column, into: &tokens)
                } else {
                    contexts.clear(column: column)
                }
            }
        }

        let first = header.finish()
        let second = tokens.finish()
        precondition(first.count < 1 << 19, "first_part_size is 19 bits")
        // Frame tag (section 9.1): inverse key frame flag, version 0, show_frame, first_part_size.
        let tag = (keyframe ? 0 : 1) | (1 << 4) | (first.count << 5)
        var frame = [UInt8(tag & 0xFF), UInt8((tag >> 8) & 0xFF), UInt8(tag >> 16)]
        if keyframe {
            // Start code, then 14-bit width and height with a zero scaling code (also section 9.1).
            frame += [0x9D, 0x01, 0x2A, UInt8(width & 0xFF), UInt8(width >> 8), UInt8(height & 0xFF), UInt8(height >> 8)]
        }
        frame.reserveCapacity(max(size, frame.count + first.count + second.count))
        frame += first
        frame += second
        if frame.count < size { frame += [UInt8](repeating: 0, count: size - frame.count) }
        return frame
    }

    /// The mode-context counts of RFC 6386 section 16.3 (find_near_mvs) for an inter macroblock:
    /// inter neighbors above and left weigh 2, above-left 1; intra ones and those outside the frame
    /// do not count. Every inter macroblock this writer codes has a zero motion vector, so they all
    /// count toward index 0; with no split macroblocks index 3 stays 0.
    private func nearMotionVectorCounts(row: Int, column: Int, macroblocks: [VP8Macroblock]) -> [Int] {
        var counts = [0, 0, 0, 0]
        for (dRow, dColumn, weight) in [(-1, 0, 2), (0, -1, 2), (-1, -1, 1)] {
            let (neighborRow, neighborColumn) = (row + dRow, column + dColumn)
            guard neighborRow >= 0, neighborColumn >= 0 else { continue }
            if macroblocks[neighborRow * columns + neighborColumn].prediction == .lastFrameUnmoved { counts[0] += weight }
        }
        return counts
    }

    /// `zeros` out of `total` as an 8-bit probability of a zero bit, kept within 1...255.
    static func probabilityOfZero(_ zeros: Int, of total: Int) -> UInt8 {
        guard total > 0 else { return 128 }
        return UInt8(min(255, max(1, (zeros * 256 + total / 2) / total)))
    }
}

/// Whether neighboring blocks had coefficients, which picks the probabilities of a block's first
/// token (RFC 6386 section 13.3): per macroblock column above, per row to the left.
private struct TokenContexts {
    private var aboveY: [Int]
    private var aboveU: [Int]
    private var aboveV: [Int]
    private var aboveY2: [Int]
    private var leftY = [0, 0, 0, 0]
    private var leftU = [0, 0]
    private var leftV = [0, 0]
    private var leftY2 = 0

    init(columns: Int) {
        aboveY = Array(repeating: 0, count: columns * 4)
        aboveU = Array(repeating: 0, count: columns * 2)
        aboveV = Array(repeating: 0, count: columns * 2)
        aboveY2 = Array(repeating: 0, count: columns)
    }

    mutating func startRow() {
        leftY = [0, 0, 0, 0]
        leftU = [0, 0]
        leftV = [0, 0]
        leftY2 = 0
    }

    /// A skipped macroblock (not B_PRED or SPLITMV) resets every context it touches, Y2's too.
    mutating func clear(column: Int) {
        for index in 0..<4 { aboveY[column * 4 + index] = 0 }
        for index in 0..<2 {
            aboveU[column * 2 + index] = 0
            aboveV[column * 2 + index] = 0
        }
        aboveY2[column] = 0
        startRow()
    }

    /// The tokens of a macroblock with a second-order block: Y2, 16 luma blocks from coefficient 1,
    /// 4 U blocks, 4 V blocks.
    mutating func write(_ levels: VP8Macroblock.DCLevels, column: Int, into tokens: inout VP8BoolEncoder) {
        let y2 = Self.writeBlock(type: 1, dc: levels.y2, first: 0, context: aboveY2[column] + leftY2, into: &tokens)
        aboveY2[column] = y2
        leftY2 = y2
        for blockRow in 0..<4 {
            for blockColumn in 0..<4 {
                let index = column * 4 + blockColumn
                let coded = Self.writeBlock(type: 0, dc: 0, first: 1, context: aboveY[index] + leftY[blockRow], into: &tokens)
                aboveY[index] = coded
                leftY[blockRow] = coded
            }
        }
        for (dc, plane) in [(levels.u, 0), (levels.v, 1)] {
            for blockRow in 0..<2 {
                for blockColumn in 0..<2 {
                    let index = column * 2 + blockColumn
                    let context = plane == 0 ? aboveU[index] + leftU[blockRow] : aboveV[index] + leftV[blockRow]
                    let coded = Self.writeBlock(type: 2, dc: dc, first: 0, context: context, into: &tokens)
                    if plane == 0 {
                        aboveU[index] = coded
                        leftU[blockRow] = coded
                    } else {
                        aboveV[index] = coded
                        leftV[blockRow] = coded
                    }
                }
            }
        }
    }

    /// One block whose only nonzero coefficient is the DC (zigzag position 0): its tokens from
    /// position `first`, then EOB. Returns 1 when the block had a nonzero coefficient, the next
    /// blocks' context.
    private static func writeBlock(type: Int, dc: Int, first: Int, context: Int, into tokens: inout VP8BoolEncoder) -> Int {
        var coefficients = [Int](repeating: 0, count: 16)
        coefficients[0] = dc
        let last = coefficients.lastIndex { $0 != 0 }.flatMap { $0 >= first ? $0 : nil }
        var context = context
        var afterZero = false
        for position in first..<16 {
            let probabilities = VP8Tables.coefficientProbabilities(type: type, band: VP8Tables.coefficientBands[position], context: context)
            guard let last, position <= last else {
                tokens.write(VP8Tables.endOfBlock, in: VP8Tables.coefficientTree, probabilities: probabilities)
                return last == nil ? 0 : 1
            }
            let value = coefficients[position]
            let magnitude = abs(value)
            let category = VP8Tables.tokenCategory(magnitude)
            tokens.write(category.token, in: VP8Tables.coefficientTree, probabilities: probabilities, skippingRoot: afterZero)
            let extra = magnitude - category.base
            for (bit, probability) in category.extraBitProbabilities.enumerated() {
                tokens.write((extra >> (category.extraBitProbabilities.count - 1 - bit)) & 1 == 1, probability: probability)
            }
            if magnitude != 0 { tokens.write(value < 0, probability: 128) }
            context = min(magnitude, 2)
            afterZero = magnitude == 0
        }
        return 1
    }
}

/// The spec's fixed trees and probabilities (RFC 6386 sections 11.2, 13, 16 and 17).
enum VP8Tables {
    static let keyframeLumaModeTree = VP8Tree([-4, 2, 4, 6, -0, -1, -2, -3])
    static let keyframeLumaModeProbabilities: [UInt8] = [145, 156, 163, 128]
    static let lumaModeTree = VP8Tree([-0, 2, 4, 6, -1, -2, -3, -4])
    static let lumaModeProbabilities: [UInt8] = [112, 86, 140, 37]
    static let chromaModeTree = VP8Tree([-0, 2, -1, 4, -2, -3])
    static let keyframeChromaModeProbabilities: [UInt8] = [142, 114, 183]
    static let chromaModeProbabilities: [UInt8] = [162, 101, 204]
    /// mv_zero "0", mv_nearest "10", mv_near "110", mv_new "1110", mv_split "1111".
    static let motionVectorReferenceTree = VP8Tree([-7, 2, -5, 4, -6, 6, -8, -9])
    static let modeContexts: [[UInt8]] = [
        [7, 1, 1, 143], [14, 18, 14, 107], [135, 64, 57, 68], [60, 56, 128, 65], [159, 134, 128, 34], [234, 188, 128, 28],
    ]

    /// Tokens DCT_0 ... DCT_4 are 0-4, dct_cat1 ... dct_cat6 are 5-10, dct_eob 11.
    static let endOfBlock = 11
    static let coefficientTree = VP8Tree([-11, 2, -0, 4, -1, 6, 8, 12, -2, 10, -5, -6, 14, 16, -3, -4, 18, 20, -7, -8, -9, -10])
    static let coefficientBands = [0, 1, 2, 3, 6, 4, 5, 6, 6, 6, 6, 6, 6, 6, 6, 7]

    struct TokenCategory {
        var token: Int
        var base: Int
        var extraBitProbabilities: [UInt8]
    }
    private static let categories: [TokenCategory] = [
        TokenCategory(token: 5, base: 5, extraBitProbabilities: [159]),
        TokenCategory(token: 6, base: 7, extraBitProbabilities: [165, 145]),
        TokenCategory(token: 7, base: 11, extraBitProbabilities: [173, 148, 140]),
        TokenCategory(token: 8, base: 19, extraBitProbabilities: [176, 155, 140, 135]),
        TokenCategory(token: 9, base: 35, extraBitProbabilities: [180, 157, 141, 134, 130]),
        TokenCategory(token: 10, base: 67, extraBitProbabilities: [254, 254, 243, 230, 196, 177, 153, 140, 133, 130, 129]),
    ]

    /// The token for a coefficient magnitude, the smallest value it stands for and its extra bits.
    static func tokenCategory(_ magnitude: Int) -> TokenCategory {
        if magnitude <= 4 { return TokenCategory(token: magnitude, base: magnitude, extraBitProbabilities: []) }
        guard let category = categories.last(where: { magnitude >= $0.base }),
              magnitude - category.base < 1 << category.extraBitProbabilities.count
        else { preconditionFailure("coefficient \(magnitude) is out of range") }
        return category
    }

    static func coefficientProbabilities(type: Int, band: Int, context: Int) -> ArraySlice<UInt8> {
        let start = ((type * 8 + band) * 3 + context) * 11
        return defaultCoefficientProbabilities[start..<(start + 11)]
    }

    /// coeff_update_probs (section 13.4), [4 block types][8 bands][3 contexts][11 nodes].
    static let coefficientUpdateProbabilities: [UInt8] = [
        // Block type 0
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        176, 246, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        223, 241, 252, 255, 255, 255, 255, 255, 255, 255, 255,
        249, 253, 253, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 244, 252, 255, 255, 255, 255, 255, 255, 255, 255,
        234, 254, 254, 255, 255, 255, 255, 255, 255, 255, 255,
        253, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 246, 254, 255, 255, 255, 255, 255, 255, 255, 255,
        239, 253, 254, 255, 255, 255, 255, 255, 255, 255, 255,
        254, 255, 254, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 248, 254, 255, 255, 255, 255, 255, 255, 255, 255,
        251, 255, 254, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 253, 254, 255, 255, 255, 255, 255, 255, 255, 255,
        251, 254, 254, 255, 255, 255, 255, 255, 255, 255, 255,
        254, 255, 254, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 254, 253, 255, 254, 255, 255, 255, 255, 255, 255,
        250, 255, 254, 255, 254, 255, 255, 255, 255, 255, 255,
        254, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        // Block type 1
        217, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        225, 252, 241, 253, 255, 255, 254, 255, 255, 255, 255,
        234, 250, 241, 250, 253, 255, 253, 254, 255, 255, 255,
        255, 254, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        223, 254, 254, 255, 255, 255, 255, 255, 255, 255, 255,
        238, 253, 254, 254, 255, 255, 255, 255, 255, 255, 255,
        255, 248, 254, 255, 255, 255, 255, 255, 255, 255, 255,
        249, 254, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 253, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        247, 254, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 253, 254, 255, 255, 255, 255, 255, 255, 255, 255,
        252, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 254, 254, 255, 255, 255, 255, 255, 255, 255, 255,
        253, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 254, 253, 255, 255, 255, 255, 255, 255, 255, 255,
        250, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        254, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        // Block type 2
        186, 251, 250, 255, 255, 255, 255, 255, 255, 255, 255,
        234, 251, 244, 254, 255, 255, 255, 255, 255, 255, 255,
        251, 251, 243, 253, 254, 255, 254, 255, 255, 255, 255,
        255, 253, 254, 255, 255, 255, 255, 255, 255, 255, 255,
        236, 253, 254, 255, 255, 255, 255, 255, 255, 255, 255,
        251, 253, 253, 254, 254, 255, 255, 255, 255, 255, 255,
        255, 254, 254, 255, 255, 255, 255, 255, 255, 255, 255,
        254, 254, 254, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 254, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        254, 254, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        254, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        254, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        // Block type 3
        248, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        250, 254, 252, 254, 255, 255, 255, 255, 255, 255, 255,
        248, 254, 249, 253, 255, 255, 255, 255, 255, 255, 255,
        255, 253, 253, 255, 255, 255, 255, 255, 255, 255, 255,
        246, 253, 253, 255, 255, 255, 255, 255, 255, 255, 255,
        252, 254, 251, 254, 254, 255, 255, 255, 255, 255, 255,
        255, 254, 252, 255, 255, 255, 255, 255, 255, 255, 255,
        248, 254, 253, 255, 255, 255, 255, 255, 255, 255, 255,
        253, 255, 254, 254, 255, 255, 255, 255, 255, 255, 255,
        255, 251, 254, 255, 255, 255, 255, 255, 255, 255, 255,
        245, 251, 254, 255, 255, 255, 255, 255, 255, 255, 255,
        253, 253, 254, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 251, 253, 255, 255, 255, 255, 255, 255, 255, 255,
        252, 253, 254, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 254, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 252, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        249, 255, 254, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 254, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 253, 255, 255, 255, 255, 255, 255, 255, 255,
        250, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        254, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    ]

    /// default_coef_probs (section 13.5), the probabilities every keyframe starts from.
    static let defaultCoefficientProbabilities: [UInt8] = [
        // Block type 0 (luma from coefficient 1, after a second-order block)
        128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128,
        128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128,
        128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128,
        253, 136, 254, 255, 228, 219, 128, 128, 128, 128, 128,
        189, 129, 242, 255, 227, 213, 255, 219, 128, 128, 128,
        106, 126, 227, 252, 214, 209, 255, 255, 128, 128, 128,
        1, 98, 248, 255, 236, 226, 255, 255, 128, 128, 128,
        181, 133, 238, 254, 221, 234, 255, 154, 128, 128, 128,
        78, 134, 202, 247, 198, 180, 255, 219, 128, 128, 128,
        1, 185, 249, 255, 243, 255, 128, 128, 128, 128, 128,
        184, 150, 247, 255, 236, 224, 128, 128, 128, 128, 128,
        77, 110, 216, 255, 236, 230, 128, 128, 128, 128, 128,
        1, 101, 251, 255, 241, 255, 128, 128, 128, 128, 128,
        170, 139, 241, 252, 236, 209, 255, 255, 128, 128, 128,
        37, 116, 196, 243, 228, 255, 255, 255, 128, 128, 128,
        1, 204, 254, 255, 245, 255, 128, 128, 128, 128, 128,
        207, 160, 250, 255, 238, 128, 128, 128, 128, 128, 128,
        102, 103, 231, 255, 211, 171, 128, 128, 128, 128, 128,
        1, 152, 252, 255, 240, 255, 128, 128, 128, 128, 128,
        177, 135, 243, 255, 234, 225, 128, 128, 128, 128, 128,
        80, 129, 211, 255, 194, 224, 128, 128, 128, 128, 128,
        1, 1, 255, 128, 128, 128, 128, 128, 128, 128, 128,
        246, 1, 255, 128, 128, 128, 128, 128, 128, 128, 128,
        255, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128,
        // Block type 1 (second-order luma DC)
        198, 35, 237, 223, 193, 187, 162, 160, 145, 155, 62,
        131, 45, 198, 221, 172, 176, 220, 157, 252, 221, 1,
        68, 47, 146, 208, 149, 167, 221, 162, 255, 223, 128,
        1, 149, 241, 255, 221, 224, 255, 255, 128, 128, 128,
        184, 141, 234, 253, 222, 220, 255, 199, 128, 128, 128,
        81, 99, 181, 242, 176, 190, 249, 202, 255, 255, 128,
        1, 129, 232, 253, 214, 197, 242, 196, 255, 255, 128,
        99, 121, 210, 250, 201, 198, 255, 202, 128, 128, 128,
        23, 91, 163, 242, 170, 187, 247, 210, 255, 255, 128,
        1, 200, 246, 255, 234, 255, 128, 128, 128, 128, 128,
        109, 178, 241, 255, 231, 245, 255, 255, 128, 128, 128,
        44, 130, 201, 253, 205, 192, 255, 255, 128, 128, 128,
        1, 132, 239, 251, 219, 209, 255, 165, 128, 128, 128,
        94, 136, 225, 251, 218, 190, 255, 255, 128, 128, 128,
        22, 100, 174, 245, 186, 161, 255, 199, 128, 128, 128,
        1, 182, 249, 255, 232, 235, 128, 128, 128, 128, 128,
        124, 143, 241, 255, 227, 234, 128, 128, 128, 128, 128,
        35, 77, 181, 251, 193, 211, 255, 205, 128, 128, 128,
        1, 157, 247, 255, 236, 231, 255, 255, 128, 128, 128,
        121, 141, 235, 255, 225, 227, 255, 255, 128, 128, 128,
        45, 99, 188, 251, 195, 217, 255, 224, 128, 128, 128,
        1, 1, 251, 255, 213, 255, 128, 128, 128, 128, 128,
        203, 1, 248, 255, 255, 128, 128, 128, 128, 128, 128,
        137, 1, 177, 255, 224, 255, 128, 128, 128, 128, 128,
        // Block type 2 (chroma)
        253, 9, 248, 251, 207, 208, 255, 192, 128, 128, 128,
        175, 13, 224, 243, 193, 185, 249, 198, 255, 255, 128,
        73, 17, 171, 221, 161, 179, 236, 167, 255, 234, 128,
        1, 95, 247, 253, 212, 183, 255, 255, 128, 128, 128,
        239, 90, 244, 250, 211, 209, 255, 255, 128, 128, 128,
        155, 77, 195, 248, 188, 195, 255, 255, 128, 128, 128,
        1, 24, 239, 251, 218, 219, 255, 205, 128, 128, 128,
        201, 51, 219, 255, 196, 186, 128, 128, 128, 128, 128,
        69, 46, 190, 239, 201, 218, 255, 228, 128, 128, 128,
        1, 191, 251, 255, 255, 128, 128, 128, 128, 128, 128,
        223, 165, 249, 255, 213, 255, 128, 128, 128, 128, 128,
        141, 124, 248, 255, 255, 128, 128, 128, 128, 128, 128,
        1, 16, 248, 255, 255, 128, 128, 128, 128, 128, 128,
        190, 36, 230, 255, 236, 255, 128, 128, 128, 128, 128,
        149, 1, 255, 128, 128, 128, 128, 128, 128, 128, 128,
        1, 226, 255, 128, 128, 128, 128, 128, 128, 128, 128,
        247, 192, 255, 128, 128, 128, 128, 128, 128, 128, 128,
        240, 128, 255, 128, 128, 128, 128, 128, 128, 128, 128,
        1, 134, 252, 255, 255, 128, 128, 128, 128, 128, 128,
        213, 62, 250, 255, 255, 128, 128, 128, 128, 128, 128,
        55, 93, 255, 128, 128, 128, 128, 128, 128, 128, 128,
        128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128,
        128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128,
        128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128,
        // Block type 3 (luma with its DC)
        202, 24, 213, 235, 186, 191, 220, 160, 240, 175, 255,
        126, 38, 182, 232, 169, 184, 228, 174, 255, 187, 128,
        61, 46, 138, 219, 151, 178, 240, 170, 255, 216, 128,
        1, 112, 230, 250, 199, 191, 247, 159, 255, 255, 128,
        166, 109, 228, 252, 211, 215, 255, 174, 128, 128, 128,
        39, 77, 162, 232, 172, 180, 245, 178, 255, 255, 128,
        1, 52, 220, 246, 198, 199, 249, 220, 255, 255, 128,
        124, 74, 191, 243, 183, 193, 250, 221, 255, 255, 128,
        24, 71, 130, 219, 154, 170, 243, 182, 255, 255, 128,
        1, 182, 225, 249, 219, 240, 255, 224, 128, 128, 128,
        149, 150, 226, 252, 216, 205, 255, 171, 128, 128, 128,
        28, 108, 170, 242, 183, 194, 254, 223, 255, 255, 128,
        1, 81, 230, 252, 204, 203, 255, 192, 128, 128, 128,
        123, 102, 209, 247, 188, 196, 255, 233, 128, 128, 128,
        20, 95, 153, 243, 164, 173, 255, 203, 128, 128, 128,
        1, 222, 248, 255, 216, 213, 128, 128, 128, 128, 128,
        168, 175, 246, 252, 235, 205, 255, 255, 128, 128, 128,
        47, 116, 215, 255, 211, 212, 255, 255, 128, 128, 128,
        1, 121, 236, 253, 212, 214, 255, 255, 128, 128, 128,
        141, 84, 213, 252, 201, 202, 255, 219, 128, 128, 128,
        42, 80, 160, 240, 162, 185, 255, 205, 128, 128, 128,
        1, 1, 255, 128, 128, 128, 128, 128, 128, 128, 128,
        244, 1, 255, 128, 128, 128, 128, 128, 128, 128, 128,
        238, 1, 255, 128, 128, 128, 128, 128, 128, 128, 128,
    ]

    /// mv_update_probs (section 17.2): rows then columns, 19 each.
    static let motionVectorUpdateProbabilities: [UInt8] = [
        237, 246, 253, 253, 254, 254, 254, 254, 254, 254, 254, 254, 254, 254, 250, 250, 252, 254, 254,
        231, 243, 245, 253, 254, 254, 254, 254, 254, 254, 254, 254, 254, 254, 251, 251, 254, 254, 254,
    ]
}

/// A synthetic camera whose frames are real VP8 at about `bitrate` bits per second: a mid-gray
/// `width` x `height` picture with a colored 16x16 square moving one macroblock per frame along
/// the rows of interior macroblocks. Frames are padded up to their share of the bitrate.
public struct SyntheticVP8Camera: Sendable {
    public struct Frame: Sendable {
        public var bytes: [UInt8]
        public var isKeyframe: Bool
    }
    public struct Color: Sendable, Equatable {
        public var y: UInt8
        public var u: UInt8
        public var v: UInt8
    }
    public static let background = Color(y: 128, u: 128, v: 128)
    public static let squareColor = Color(y: 180, u: 60, v: 200)

    public let bitrate: Int
    public let fps: Int
    private let writer: VP8FrameWriter
    public var width: Int { writer.width }
    public var height: Int { writer.height }
    public private(set) var framesMade = 0
    /// Where the last frame drew the square (macroblock row and column), nil when the picture is too
    /// small for one.
    public private(set) var squareMacroblock: (row: Int, column: Int)?

    public init(width: Int = 320, height: Int = 240, bitrate: Int, fps: Int) {
        precondition(fps > 0, "frames per second must be positive")
        writer = VP8FrameWriter(width: width, height: height)
        self.bitrate = bitrate
        self.fps = fps
    }

    /// A frame's share of the bitrate; keyframes get four shares.
    public func targetSize(keyframe: Bool) -> Int {
        max(64, bitrate / 8 / fps * (keyframe ? 4 : 1))
    }

    /// The next frame: a keyframe when asked, and always first (interframes need one to refer to).
    public mutating func nextFrame(keyframe requested: Bool) -> Frame {
        let keyframe = requested || framesMade == 0
        let square = squarePosition(frame: framesMade)
        var plan = [VP8Macroblock](
            repeating: VP8Macroblock(prediction: keyframe ? .intra(luma: .dc, chroma: .dc) : .lastFrameUnmoved, residual: nil),
            count: writer.columns * writer.rows)
        if let square {
            let index = square.row * writer.columns + square.column
            if keyframe {
                // Neighbors right and below would average the square into their DC prediction:
                // they copy the gray above or to the left instead.
                plan[index + 1].prediction = .intra(luma: .vertical, chroma: .vertical)
                plan[index + writer.columns].prediction = .intra(luma: .horizontal, chroma: .horizontal)
            } else if let previous = squareMacroblock, previous != square {
                // The old place predicts gray again from its gray neighbors above and left.
                plan[previous.row * writer.columns + previous.column].prediction = .intra(luma: .dc, chroma: .dc)
            }
            plan[index] = VP8Macroblock(prediction: .intra(luma: .dc, chroma: .dc), residual: Self.squareLevels)
        }
        let bytes = writer.frame(keyframe: keyframe, macroblocks: plan, size: targetSize(keyframe: keyframe))
        squareMacroblock = square
        framesMade += 1
        return Frame(bytes: bytes, isKeyframe: keyframe)
    }

    /// The square's DC levels over the gray prediction (128 in every plane).
    private static let squareLevels = VP8Macroblock.DCLevels(
        y2: (Int(squareColor.y) - Int(background.y)) * VP8FrameWriter.lumaLevelPerPixelStep,
        u: (Int(squareColor.u) - Int(background.u)) * VP8FrameWriter.chromaLevelPerPixelStep,
        v: (Int(squareColor.v) - Int(background.v)) * VP8FrameWriter.chromaLevelPerPixelStep)

    /// Interior macroblocks only, so every prediction around the square reads gray pixels, never the
    /// frame's edge values; at least 2 x 2 of them, so the square's old place is never next to its new one.
    private func squarePosition(frame: Int) -> (row: Int, column: Int)? {
        let interiorColumns = writer.columns - 2
        let interiorRows = writer.rows - 2
        guard interiorColumns >= 2, interiorRows >= 2 else { return nil }
        let step = frame % (interiorColumns * interiorRows)
        return (1 + step / interiorColumns, 1 + step % interiorColumns)
    }
}
