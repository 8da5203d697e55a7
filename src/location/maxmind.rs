//! MaxMind databases through the maxminddb crate, memory-mapped: City or
//! Country for the place, ISP or ASN for the carrier. The kind is read from
//! the file's metadata, so a database given to the wrong flag is an error.
//! Only the few fields shown are decoded (by path), not whole records.

use std::net::IpAddr;
use std::path::Path;

use maxminddb::{LookupResult, Mmap, PathElement, Reader};

use super::{Labels, Lang, LookupError};
use crate::error::Error;

fn open(path: &Path, flag: &str) -> Result<Reader<Mmap>, Error> {
    super::must_be_a_file(path, flag)?;
    // SAFETY: the file must not be truncated in place while mapped;
    // geoipupdate and package managers replace database files by rename,
    // which leaves this mapping intact.
    unsafe { Reader::open_mmap(path) }.map_err(|e| Error::fatal(format!("{flag} {}: {e}", path.display())))
}

fn kind_error(flag: &str, path: &Path, found: &str, wanted: &str) -> Error {
    Error::fatal(format!("{flag} {}: this is a {found} database; {flag} takes {wanted}", path.display()))
}

pub struct CityDb {
    reader: Reader<Mmap>,
}

impl CityDb {
    pub fn open(path: &Path) -> Result<CityDb, Error> {
        let reader = open(path, "-g")?;
        let kind = reader.metadata().database_type.clone();
        if !(kind.contains("City") || kind.contains("Country")) {
            return Err(kind_error("-g", path, &kind, "a City or Country database (ISP and ASN go to --isp-db)"));
        }
        Ok(CityDb { reader })
    }

    pub fn labels(&self, ip: IpAddr, lang: Lang) -> Result<Labels, LookupError> {
        let record = self.reader.lookup(ip).map_err(|_| LookupError)?;
        Ok(Labels {
            country: name(&record, &[PathElement::Key("country")], lang)?,
            province: name(&record, &[PathElement::Key("subdivisions"), PathElement::Index(0)], lang)?,
            city: name(&record, &[PathElement::Key("city")], lang)?,
            isp: None,
        })
    }

    pub fn iso_code(&self, ip: IpAddr) -> Result<Option<String>, LookupError> {
        let record = self.reader.lookup(ip).map_err(|_| LookupError)?;
        text(&record, &[PathElement::Key("country"), PathElement::Key("iso_code")])
    }
}

/// `<at>.names.<lang>`, else `<at>.names.en`.
fn name(record: &LookupResult<'_, Mmap>, at: &[PathElement<'_>], lang: Lang) -> Result<Option<String>, LookupError> {
    for key in [lang.key(), "en"] {
        let mut path = at.to_vec();
        path.extend([PathElement::Key("names"), PathElement::Key(key)]);
        if let Some(name) = text(record, &path)? {
            return Ok(Some(name));
        }
    }
    Ok(None)
}

fn text(record: &LookupResult<'_, Mmap>, path: &[PathElement<'_>]) -> Result<Option<String>, LookupError> {
    match record.decode_path::<String>(path) {
        Ok(value) => Ok(value.filter(|v| !v.is_empty())),
        Err(_) => Err(LookupError),
    }
}

pub struct IspDb {
    reader: Reader<Mmap>,
    asn_only: bool,
}

impl IspDb {
    pub fn open(path: &Path) -> Result<IspDb, Error> {
        let reader = open(path, "--isp-db")?;
        let kind = reader.metadata().database_type.clone();
        let asn_only = kind.contains("ASN");
        if !(asn_only || kind.contains("ISP")) {
            return Err(kind_error("--isp-db", path, &kind, "a GeoIP2-ISP or GeoLite2-ASN database (City goes to -g)"));
        }
        Ok(IspDb { reader, asn_only })
    }

    /// GeoIP2-ISP: `isp` (else the AS organisation); GeoLite2-ASN:
    /// `AS15169 Google Inc.`, the number telling apart same-named networks.
    pub fn isp(&self, ip: IpAddr) -> Result<Option<String>, LookupError> {
        let record = self.reader.lookup(ip).map_err(|_| LookupError)?;
        if !self.asn_only {
            if let Some(isp) = text(&record, &[PathElement::Key("isp")])? {
                return Ok(Some(isp));
            }
        }
        let org = text(&record, &[PathElement::Key("autonomous_system_organization")])?;
        let number = record
            .decode_path::<u32>(&[PathElement::Key("autonomous_system_number")])
            .map_err(|_| LookupError)?;
        Ok(match (number, org) {
            (Some(n), Some(org)) if self.asn_only => Some(format!("AS{n} {org}")),
            (_, Some(org)) => Some(org),
            (Some(n), None) => Some(format!("AS{n}")),
            (None, None) => None,
        })
    }
}
