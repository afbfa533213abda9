//! Request prices and the estimated S3 request cost of a mount.
//!
//! S3 bills requests per 1,000 in classes. The defaults are the S3 Standard list prices in
//! us-east-1 (checked against public AWS pricing pages when this was written; prices change and
//! vary by region and storage class, so they are flags):
//!
//! | class | operations here | default per 1,000 |
//! |---|---|---|
//! | PUT (AWS "Tier 1": PUT, COPY, POST, LIST) | PutObject, CreateMultipartUpload, UploadPart, CompleteMultipartUpload, CopyObject, UploadPartCopy, ListObjectsV2 | $0.005 |
//! | GET (AWS "Tier 2": GET, HEAD and all other requests) | GetObject, HeadObject | $0.0004 |
//! | DELETE (free on S3: DELETE and multipart CANCEL) | DeleteObject, AbortMultipartUpload | $0 |
//!
//! Prices are held as whole nano-dollars per 1,000 requests, which is the same number as
//! pico-dollars per request, so the estimate is exact integer arithmetic: `requests x price`
//! with no rounding, whatever the counts.

use std::fmt;
use std::str::FromStr;

use crate::client::S3Operation;

/// Decimal places a price may have (nano-dollar resolution).
const DECIMALS: usize = 9;
const NANOS_PER_DOLLAR: u64 = 1_000_000_000;

/// A price in US dollars per 1,000 requests, exact to 1e-9 dollars.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PricePer1k {
    nano_usd: u64,
}

impl PricePer1k {
    /// A price of `nano_usd` billionths of a dollar per 1,000 requests.
    pub const fn from_nano_usd(nano_usd: u64) -> Self {
        PricePer1k { nano_usd }
    }

    /// Billionths of a dollar per 1,000 requests (= trillionths of a dollar per request).
    pub const fn nano_usd(self) -> u64 {
        self.nano_usd
    }
}

impl FromStr for PricePer1k {
    type Err = String;

    /// Parses a plain decimal number of dollars: `0.0004`, `5`, `.005`. No sign, no exponent.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("'{s}' is not a price: write a plain number of US dollars such as 0.0004");
        let (whole, fraction) = s.split_once('.').unwrap_or((s, ""));
        if whole.is_empty() && fraction.is_empty() {
            return Err(bad());
        }
        if !whole.bytes().chain(fraction.bytes()).all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        if fraction.len() > DECIMALS {
            return Err(format!("'{s}' has more than {DECIMALS} decimal places"));
        }
        let whole: u64 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| bad())? };
        let fraction_nanos: u64 =
            if fraction.is_empty() { 0 } else { format!("{fraction:0<DECIMALS$}").parse().map_err(|_| bad())? };
        // Keep totals far from overflow: a u128 of pico-dollars holds any count at this price.
        if whole > 1_000_000 {
            return Err(format!("'{s}' is more than $1,000,000 per 1,000 requests"));
        }
        Ok(PricePer1k { nano_usd: whole * NANOS_PER_DOLLAR + fraction_nanos })
    }
}

impl fmt::Display for PricePer1k {
    /// The shortest decimal that parses back to the same price (`0.0004`, `5`, `0`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&decimal(u128::from(self.nano_usd), DECIMALS))
    }
}

/// `value / 10^decimals` as a decimal string without trailing zeros.
fn decimal(value: u128, decimals: usize) -> String {
    let scale = 10u128.pow(decimals as u32);
    let (whole, fraction) = (value / scale, value % scale);
    if fraction == 0 {
        return whole.to_string();
    }
    let fraction = format!("{fraction:0>decimals$}");
    format!("{whole}.{}", fraction.trim_end_matches('0'))
}

/// How S3 bills a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PriceClass {
    /// PUT, COPY, POST and LIST (AWS "Tier 1").
    Put,
    /// GET, HEAD and every other request (AWS "Tier 2").
    Get,
    /// DELETE and multipart-upload aborts (free on S3).
    Delete,
}

impl PriceClass {
    /// The class an operation is billed in.
    pub fn of(op: S3Operation) -> PriceClass {
        match op {
            S3Operation::PutObject
            | S3Operation::CreateMultipartUpload
            | S3Operation::UploadPart
            | S3Operation::CompleteMultipartUpload
            | S3Operation::CopyObject
            | S3Operation::UploadPartCopy
            | S3Operation::RenameObject
            | S3Operation::ListObjectsV2 => PriceClass::Put,
            S3Operation::GetObject | S3Operation::HeadObject => PriceClass::Get,
            S3Operation::DeleteObject | S3Operation::AbortMultipartUpload => PriceClass::Delete,
        }
    }
}

/// Prices of the three request classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestPrices {
    /// `--cost-per-1k-get`: GET, HEAD and other requests.
    pub get: PricePer1k,
    /// `--cost-per-1k-put`: PUT, COPY, POST and LIST requests.
    pub put: PricePer1k,
    /// `--cost-per-1k-delete`: DELETE and abort requests.
    pub delete: PricePer1k,
}

impl RequestPrices {
    /// S3 Standard, us-east-1: GET $0.0004, PUT $0.005, DELETE free (per 1,000 requests).
    pub const S3_STANDARD_US_EAST_1: RequestPrices = RequestPrices {
        get: PricePer1k::from_nano_usd(400_000),
        put: PricePer1k::from_nano_usd(5_000_000),
        delete: PricePer1k::from_nano_usd(0),
    };

    /// The price of a class.
    pub fn of(&self, class: PriceClass) -> PricePer1k {
        match class {
            PriceClass::Put => self.put,
            PriceClass::Get => self.get,
            PriceClass::Delete => self.delete,
        }
    }
}

impl Default for RequestPrices {
    fn default() -> Self {
        Self::S3_STANDARD_US_EAST_1
    }
}

/// Billable requests per class, priced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CostEstimate {
    pub prices: RequestPrices,
    /// Billable requests in the PUT, GET and DELETE classes.
    pub put_requests: u64,
    pub get_requests: u64,
    pub delete_requests: u64,
}

impl CostEstimate {
    /// Prices `billable` request counts per operation.
    pub fn new(prices: RequestPrices, billable: impl IntoIterator<Item = (S3Operation, u64)>) -> Self {
        let mut estimate = CostEstimate { prices, put_requests: 0, get_requests: 0, delete_requests: 0 };
        for (op, n) in billable {
            match PriceClass::of(op) {
                PriceClass::Put => estimate.put_requests += n,
                PriceClass::Get => estimate.get_requests += n,
                PriceClass::Delete => estimate.delete_requests += n,
            }
        }
        estimate
    }

    /// The estimate in trillionths of a dollar (exact).
    pub fn pico_usd(&self) -> u128 {
        let class = |n: u64, price: PricePer1k| u128::from(n) * u128::from(price.nano_usd());
        class(self.put_requests, self.prices.put)
            + class(self.get_requests, self.prices.get)
            + class(self.delete_requests, self.prices.delete)
    }

    /// The estimate in dollars, as an exact decimal string (`0.0000124`).
    pub fn usd(&self) -> String {
        decimal(self.pico_usd(), 12)
    }
}

impl fmt::Display for CostEstimate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.prices;
        write!(
            f,
            "${} = {} PUT/COPY/POST/LIST x ${}/1k + {} GET/HEAD x ${}/1k + {} DELETE x ${}/1k",
            self.usd(),
            self.put_requests,
            p.put,
            self.get_requests,
            p.get,
            self.delete_requests,
            p.delete
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_prices() {
        let cases = [
            ("0.0004", 400_000, "0.0004"),
            ("0.005", 5_000_000, "0.005"),
            (".005", 5_000_000, "0.005"),
            ("5", 5_000_000_000, "5"),
            ("5.", 5_000_000_000, "5"),
            ("0", 0, "0"),
            ("0.000000001", 1, "0.000000001"),
            ("12.50", 12_500_000_000, "12.5"),
        ];
        for (text, nanos, shown) in cases {
            let price: PricePer1k = text.parse().unwrap();
            assert_eq!(price.nano_usd(), nanos, "{text}");
            assert_eq!(price.to_string(), shown, "{text}");
        }
        for bad in ["", ".", "-1", "1e-3", "0.0000000001", "abc", "1,5", " 1", "2000000"] {
            assert!(bad.parse::<PricePer1k>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn every_operation_has_the_class_s3_bills_it_in() {
        use S3Operation::*;
        let expected = [
            (HeadObject, PriceClass::Get),
            (GetObject, PriceClass::Get),
            (ListObjectsV2, PriceClass::Put),
            (PutObject, PriceClass::Put),
            (CreateMultipartUpload, PriceClass::Put),
            (UploadPart, PriceClass::Put),
            (CompleteMultipartUpload, PriceClass::Put),
            (AbortMultipartUpload, PriceClass::Delete),
            (DeleteObject, PriceClass::Delete),
            (CopyObject, PriceClass::Put),
            (UploadPartCopy, PriceClass::Put),
            (RenameObject, PriceClass::Put),
        ];
        assert_eq!(expected.len(), S3Operation::ALL.len());
        for (op, class) in expected {
            assert_eq!(PriceClass::of(op), class, "{op:?}");
        }
    }

    #[test]
    fn estimates_are_exact_products() {
        let estimate = CostEstimate::new(
            RequestPrices::default(),
            [(S3Operation::GetObject, 1_000), (S3Operation::HeadObject, 500), (S3Operation::ListObjectsV2, 3)],
        );
        assert_eq!(estimate.get_requests, 1_500);
        assert_eq!(estimate.put_requests, 3);
        // 1500 x 0.0004/1000 + 3 x 0.005/1000 = 0.0006 + 0.000015
        assert_eq!(estimate.usd(), "0.000615");
        assert_eq!(
            estimate.to_string(),
            "$0.000615 = 3 PUT/COPY/POST/LIST x $0.005/1k + 1500 GET/HEAD x $0.0004/1k + 0 DELETE x $0/1k"
        );
        let free = CostEstimate::new(RequestPrices::default(), [(S3Operation::DeleteObject, 10)]);
        assert_eq!(free.usd(), "0");
        let huge = CostEstimate::new(
            RequestPrices { put: "1000000".parse().unwrap(), ..RequestPrices::default() },
            [(S3Operation::PutObject, u64::MAX)],
        );
        assert_eq!(huge.pico_usd(), u128::from(u64::MAX) * 1_000_000 * 1_000_000_000);
    }
}
