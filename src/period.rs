//! Billing periods (`--billing-day`): a period starts at local midnight of
//! the billing day of each month, a day past the month's end meaning its
//! last day (31 in February: the 28th or 29th). Local time comes from the
//! system's time zone file (`TZ=:PATH`, else `/etc/localtime`), read by hand
//! ([`Zone`], the TZif format of RFC 8536): no C time functions, whose
//! `time_t` is 32 or 64 bits wide depending on the C library of a 32-bit
//! router. The arithmetic takes the zone as a function from an instant to
//! its offset from UTC, so tests inject any clock and any zone.

/// Seconds east of UTC in force at a UTC instant (Unix seconds).
pub trait Offset {
    fn offset_at(&self, utc: i64) -> i64;
}

impl<F: Fn(i64) -> i64> Offset for F {
    fn offset_at(&self, utc: i64) -> i64 {
        self(utc)
    }
}

/// The start (Unix seconds) of the period that holds `now`.
pub fn period_start(now: i64, billing_day: u8, zone: &impl Offset) -> i64 {
    let (y, m, d) = civil_from_days((now + zone.offset_at(now)).div_euclid(86_400));
    let (y, m) = if d < day_in(y, m, billing_day) { previous_month(y, m) } else { (y, m) };
    let start = local_midnight(y, m, day_in(y, m, billing_day), zone);
    // A midnight that a clock change skipped lands a little late: never after now.
    if start > now { local_midnight_before(y, m, billing_day, zone) } else { start }
}

/// The start of the period after the one that starts at `start`.
pub fn next_start(start: i64, billing_day: u8, zone: &impl Offset) -> i64 {
    // Noon of the start day, so that a clock change at midnight cannot move the date.
    let (y, m, _) = civil_from_days((start + 12 * 3_600 + zone.offset_at(start)).div_euclid(86_400));
    let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    local_midnight(y, m, day_in(y, m, billing_day), zone)
}

fn local_midnight_before(y: i64, m: u32, billing_day: u8, zone: &impl Offset) -> i64 {
    let (y, m) = previous_month(y, m);
    local_midnight(y, m, day_in(y, m, billing_day), zone)
}

/// The billing day in month `m` of year `y`: at most the month's last day.
fn day_in(y: i64, m: u32, billing_day: u8) -> u32 {
    u32::from(billing_day.clamp(1, 31)).min(days_in_month(y, m))
}

fn previous_month(y: i64, m: u32) -> (i64, u32) {
    if m == 1 { (y - 1, 12) } else { (y, m - 1) }
}

/// The UTC instant of 00:00 local time on that day.
fn local_midnight(y: i64, m: u32, d: u32, zone: &impl Offset) -> i64 {
    let local = days_from_civil(y, m, d) * 86_400;
    // The offset of the instant itself: guess with the local reading, then correct.
    let guess = local - zone.offset_at(local);
    local - zone.offset_at(guess)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day counted from 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { era * 400 + yoe + 1 } else { era * 400 + yoe }, m, d)
}

/// The local date of a UTC instant, `YYYY-MM-DD`.
pub fn local_date(utc: i64, zone: &impl Offset) -> String {
    let (y, m, d) = civil_from_days((utc + zone.offset_at(utc)).div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

/// The billing periods of one billing day in one zone.
#[derive(Clone, Debug)]
pub struct Periods {
    pub billing_day: u8,
    pub zone: Zone,
}

impl Periods {
    /// The start of the period that holds `now`.
    pub fn start_of(&self, now: i64) -> i64 {
        period_start(now, self.billing_day, &self.zone)
    }

    /// The start of the period after the one starting at `start`.
    pub fn after(&self, start: i64) -> i64 {
        next_start(start, self.billing_day, &self.zone)
    }
}

/// A time zone as a TZif file describes it: the offsets in force from each
/// transition on. After the file's last transition its offset holds (the
/// files of Debian's tzdata list transitions to 2037).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Zone {
    /// `(from, offset)`, ascending; before the first, `initial`.
    transitions: Vec<(i64, i64)>,
    initial: i64,
}

impl Zone {
    /// UTC: what a system without a zone file keeps.
    pub fn utc() -> Zone {
        Zone::default()
    }

    /// The system's zone: `TZ=:PATH` or `TZ=NAME` (under /usr/share/zoneinfo)
    /// if set, else /etc/localtime; UTC if none can be read.
    pub fn local() -> Zone {
        let path = match std::env::var("TZ") {
            Ok(tz) if tz.starts_with(':') => tz[1..].to_string(),
            Ok(tz) if !tz.is_empty() && !tz.contains("..") => format!("/usr/share/zoneinfo/{tz}"),
            _ => "/etc/localtime".to_string(),
        };
        std::fs::read(path).ok().and_then(|bytes| Zone::from_tzif(&bytes)).unwrap_or_default()
    }

    /// Reads a TZif file (RFC 8536): version 2+ files' 64-bit part, else
    /// the version 1 part. `None` if it is not one.
    pub fn from_tzif(bytes: &[u8]) -> Option<Zone> {
        let (first, rest) = Block::read(bytes, 4)?;
        if bytes.get(4).is_some_and(|&v| v >= b'2') {
            let (second, _) = Block::read(rest, 8)?;
            second.zone()
        } else {
            first.zone()
        }
    }
}

impl Offset for Zone {
    fn offset_at(&self, utc: i64) -> i64 {
        match self.transitions.partition_point(|&(from, _)| from <= utc) {
            0 => self.initial,
            i => self.transitions[i - 1].1,
        }
    }
}

/// One data block of a TZif file, its times `width` bytes wide.
struct Block<'a> {
    times: &'a [u8],
    indexes: &'a [u8],
    types: &'a [u8],
    width: usize,
}

impl<'a> Block<'a> {
    /// The block at the start of `bytes` (header included) and what follows it.
    fn read(bytes: &'a [u8], width: usize) -> Option<(Block<'a>, &'a [u8])> {
        if bytes.get(..4)? != b"TZif" {
            return None;
        }
        let count = |i: usize| -> Option<usize> { Some(u32::from_be_bytes(bytes.get(20 + 4 * i..24 + 4 * i)?.try_into().ok()?) as usize) };
        let (isut, isstd, leap, time, typ, chars) = (count(0)?, count(1)?, count(2)?, count(3)?, count(4)?, count(5)?);
        let mut at: usize = 44;
        let mut take = |n: usize| -> Option<&'a [u8]> {
            let part = bytes.get(at..at.checked_add(n)?)?;
            at += n;
            Some(part)
        };
        let times = take(time.checked_mul(width)?)?;
        let indexes = take(time)?;
        let types = take(typ.checked_mul(6)?)?;
        take(chars)?;
        take(leap.checked_mul(width + 4)?)?;
        take(isstd)?;
        take(isut)?;
        Some((Block { times, indexes, types, width }, bytes.get(at..)?))
    }

    fn offset_of_type(&self, index: usize) -> Option<i64> {
        let t = self.types.get(6 * index..6 * index + 4)?;
        Some(i64::from(i32::from_be_bytes(t.try_into().ok()?)))
    }

    fn zone(&self) -> Option<Zone> {
        let mut transitions = Vec::with_capacity(self.indexes.len());
        for (i, &index) in self.indexes.iter().enumerate() {
            let time = self.times.get(i * self.width..(i + 1) * self.width)?;
            let from = match self.width {
                8 => i64::from_be_bytes(time.try_into().ok()?),
                _ => i64::from(i32::from_be_bytes(time.try_into().ok()?)),
            };
            transitions.push((from, self.offset_of_type(usize::from(index))?));
        }
        // Before the first transition: the first type (RFC 8536, 3.2).
        let initial = self.offset_of_type(0).unwrap_or(0);
        Some(Zone { transitions, initial })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix seconds of a UTC date and time.
    fn utc(y: i64, m: u32, d: u32, h: i64) -> i64 {
        days_from_civil(y, m, d) * 86_400 + h * 3_600
    }

    #[test]
    fn a_local_date_is_the_date_in_the_zone() {
        assert_eq!(local_date(utc(2026, 11, 30, 23), &|_| 0), "2026-11-30");
        assert_eq!(local_date(utc(2026, 11, 30, 23), &berlin), "2026-12-01", "midnight in Berlin is 23:00 UTC");
        assert_eq!(local_date(utc(1969, 12, 31, 12), &|_| 0), "1969-12-31");
    }

    /// Central Europe: +1, +2 from the last Sunday of March 01:00 UTC to the
    /// last Sunday of October 01:00 UTC.
    fn berlin(t: i64) -> i64 {
        let (y, _, _) = civil_from_days(t.div_euclid(86_400));
        let last_sunday = |m: u32| {
            let last = days_from_civil(y, m, 31);
            last - (last + 4).rem_euclid(7) // 1970-01-01 was a Thursday
        };
        let (begin, end) = (last_sunday(3) * 86_400 + 3_600, last_sunday(10) * 86_400 + 3_600);
        if (begin..end).contains(&t) { 7_200 } else { 3_600 }
    }

    #[test]
    fn dates_round_trip_across_centuries() {
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
    }

    #[test]
    fn day_31_means_the_last_day_of_short_months_leap_years_included() {
        let zone = |_| 0;
        assert_eq!(period_start(utc(2025, 3, 10, 12), 31, &zone), utc(2025, 2, 28, 0));
        assert_eq!(period_start(utc(2024, 3, 10, 12), 31, &zone), utc(2024, 2, 29, 0), "leap year");
        assert_eq!(period_start(utc(2100, 3, 10, 12), 31, &zone), utc(2100, 2, 28, 0), "not a leap year");
        assert_eq!(period_start(utc(2000, 3, 10, 12), 31, &zone), utc(2000, 2, 29, 0), "a leap year");
        assert_eq!(next_start(utc(2024, 2, 29, 0), 31, &zone), utc(2024, 3, 31, 0));
        assert_eq!(next_start(utc(2024, 3, 31, 0), 31, &zone), utc(2024, 4, 30, 0));
        assert_eq!(period_start(utc(2024, 3, 31, 0), 31, &zone), utc(2024, 3, 31, 0), "the first second is the new period's");
        assert_eq!(period_start(utc(2024, 3, 30, 23) + 3_599, 31, &zone), utc(2024, 2, 29, 0), "the last is the old one's");
    }

    #[test]
    fn days_1_and_15_across_the_year_end_and_february() {
        let zone = |_| 0;
        assert_eq!(period_start(utc(2025, 1, 1, 0), 1, &zone), utc(2025, 1, 1, 0));
        assert_eq!(period_start(utc(2024, 12, 31, 23), 1, &zone), utc(2024, 12, 1, 0));
        assert_eq!(period_start(utc(2025, 1, 14, 23), 15, &zone), utc(2024, 12, 15, 0));
        assert_eq!(next_start(utc(2024, 12, 15, 0), 15, &zone), utc(2025, 1, 15, 0));
        assert_eq!(next_start(utc(2025, 1, 15, 0), 15, &zone), utc(2025, 2, 15, 0));
    }

    #[test]
    fn local_midnight_in_a_zone_with_daylight_saving() {
        // Berlin midnight of 1 March is 23:00 UTC the day before (+1); of 1 April 22:00 (+2).
        assert_eq!(period_start(utc(2025, 3, 15, 0), 1, &berlin), utc(2025, 2, 28, 23));
        assert_eq!(next_start(utc(2025, 2, 28, 23), 1, &berlin), utc(2025, 3, 31, 22), "the clocks changed on 30 March");
        assert_eq!(next_start(utc(2025, 9, 30, 22), 1, &berlin), utc(2025, 10, 31, 23), "and back on 26 October");
        // A billing day on the day of the change: 30 March 2025, midnight was still +1.
        assert_eq!(period_start(utc(2025, 3, 30, 12), 30, &berlin), utc(2025, 3, 29, 23));
        // Shanghai (+8): 1 July's period starts 16:00 UTC on 30 June.
        assert_eq!(period_start(utc(2025, 7, 1, 16), 1, &|_| 8 * 3_600), utc(2025, 6, 30, 16));
        assert_eq!(period_start(utc(2025, 6, 30, 15), 1, &|_| 8 * 3_600), utc(2025, 5, 31, 16));
    }

    #[test]
    fn a_tzif_file_gives_the_offsets_it_lists() {
        // The Berlin file of this machine's tzdata, if there: it must agree with the rule above.
        let Ok(bytes) = std::fs::read("/usr/share/zoneinfo/Europe/Berlin") else { return };
        let zone = Zone::from_tzif(&bytes).expect("a TZif file");
        for day in (days_from_civil(2000, 1, 1)..days_from_civil(2037, 1, 1)).step_by(5) {
            for hour in [0, 1, 2, 3, 23] {
                let t = day * 86_400 + hour * 3_600;
                assert_eq!(zone.offset_at(t), berlin(t), "{:?} {hour}:00 UTC", civil_from_days(day));
            }
        }
        assert_eq!(Zone::from_tzif(b"TZif2 but short"), None);
        assert_eq!(Zone::from_tzif(b"not a zone file at all, not at all, not at all"), None);
        assert_eq!(Zone::utc().offset_at(0), 0);
    }
}
