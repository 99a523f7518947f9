//! An exact running sum of f64s, so a live tally's sum does not drift.
//!
//! A float sum kept by adding and subtracting loses what it rounds off: add
//! 1e20 and 0.5, take the 1e20 away again, and it says 0. A tally that
//! lives for weeks of changes would end up showing the rounding history,
//! not the fleet. So the sum is kept as one wide integer in units of
//! 2^-1074 (the smallest f64 step), which every finite f64 is a whole
//! number of: adding and removing are then exact, and the sum depends
//! only on which values are in it, never on the order they came and went.

/// Digits of 32 bits. A finite f64 spans bits 0..2098 of the integer
/// (2^1024 is bit 2098); 68 digits, 2176 bits, leave room for a sum of
/// 2^31 of the largest values and a sign.
const DIGITS: usize = 68;

/// The exact sum of the values added minus those removed.
///
/// Digits are left uncarried, each the plain sum of the 32-bit pieces
/// that landed on it, so an add touches three digits and two sums of the
/// same values hold the same digits. Each piece is below 2^32, so a digit
/// stays within an i64 while fewer than 2^31 values are in the sum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ExactSum {
    digits: [i64; DIGITS],
}

impl Default for ExactSum {
    fn default() -> Self {
        ExactSum {
            digits: [0; DIGITS],
        }
    }
}

impl ExactSum {
    pub(super) fn add(&mut self, x: f64) {
        self.apply(x, 1);
    }

    pub(super) fn remove(&mut self, x: f64) {
        self.apply(x, -1);
    }

    /// Adds every value of `other`: digits are uncarried sums, so adding
    /// them digit by digit is the sum of both multisets.
    pub(super) fn merge(&mut self, other: &ExactSum) {
        for (mine, theirs) in self.digits.iter_mut().zip(&other.digits) {
            *mine = mine.wrapping_add(*theirs);
        }
    }

    /// Adds `sign` × `x`. Non-finite values, which JSON cannot hold, are
    /// ignored.
    fn apply(&mut self, x: f64, sign: i64) {
        if !x.is_finite() {
            return;
        }
        let bits = x.to_bits();
        let sign = if bits >> 63 == 1 { -sign } else { sign };
        let exponent = (bits >> 52) & 0x7ff;
        let fraction = bits & ((1 << 52) - 1);
        // x = mantissa × 2^(shift - 1074).
        let (mantissa, shift) = match exponent {
            0 => (fraction, 0),
            e => (fraction | (1 << 52), e - 1),
        };
        let (digit, offset) = ((shift / 32) as usize, shift % 32);
        let wide = u128::from(mantissa) << offset;
        for i in 0..3 {
            let piece = ((wide >> (32 * i)) & 0xffff_ffff) as i64;
            if let Some(slot) = self.digits.get_mut(digit + i) {
                *slot = slot.wrapping_add(sign * piece);
            }
        }
    }

    /// The sum as the nearest f64 (infinite past f64's range).
    pub(super) fn value(&self) -> f64 {
        // Carry into digits in 0..2^32; what is left over is the sign.
        let mut digits = [0u32; DIGITS];
        let mut carry: i128 = 0;
        for (out, &digit) in digits.iter_mut().zip(&self.digits) {
            let v = i128::from(digit) + carry;
            *out = (v & 0xffff_ffff) as u32;
            carry = v >> 32;
        }
        let negative = carry < 0;
        if negative {
            // Two's complement: the magnitude is !digits + 1.
            let mut carry = 1u64;
            for d in digits.iter_mut() {
                let v = u64::from(!*d) + carry;
                *d = v as u32;
                carry = v >> 32;
            }
        }
        let Some(top) = digits.iter().rposition(|&d| d != 0) else {
            return 0.0;
        };
        // The top four digits, at least 97 significant bits, and a sticky
        // bit for any below: u128 to f64 then rounds as the whole would.
        let low = top.saturating_sub(3);
        let mut window = digits
            .get(low..=top)
            .unwrap_or(&[])
            .iter()
            .rev()
            .fold(0u128, |acc, &d| (acc << 32) | u128::from(d));
        if digits.get(..low).unwrap_or(&[]).iter().any(|&d| d != 0) {
            window |= 1;
        }
        let magnitude = times_pow2(window as f64, 32 * low as i32 - 1074);
        if negative {
            -magnitude
        } else {
            magnitude
        }
    }
}

/// `x` × 2^`k`, in steps that stay within f64's exponent range.
fn times_pow2(mut x: f64, mut k: i32) -> f64 {
    let pow2 = |k: i32| f64::from_bits(((k + 1023) as u64) << 52);
    while k > 1023 {
        x *= pow2(1023);
        k -= 1023;
    }
    while k < -1022 {
        x *= pow2(-1022);
        k += 1022;
    }
    x * pow2(k)
}
