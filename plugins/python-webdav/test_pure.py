"""Unit tests of the plugin's pure modules, run natively:
`python3 -B -m unittest test_pure` in this folder (tests/python.rs runs
them before building the component)."""

import base64
import unittest

import multistatus
from location import ConfigError, Location, check_key


def loc(url, **settings):
    return Location.parse(url, {k.replace("_", "-"): v for k, v in settings.items()})


class LocationTest(unittest.TestCase):
    def test_litestream_url_forms(self):
        l = loc("webdav://alice:s%40cret@127.0.0.1:8080/backups/app")
        self.assertEqual(l.origin, "http://127.0.0.1:8080")
        self.assertEqual(l.root, ["backups", "app"])
        self.assertEqual(l.authorization, "Basic " + base64.b64encode(b"alice:s@cret").decode())
        self.assertEqual(loc("webdavs://dav.example.com/x").origin, "https://dav.example.com")
        self.assertIsNone(loc("webdav://h/x").authorization)
        l = loc("webdav://h/x?webdav-username=q&webdav-password=a%26b#f")
        self.assertEqual(l.root, ["x"])
        self.assertEqual(l.authorization, "Basic " + base64.b64encode(b"q:a&b").decode())
        l = loc("webdav://h/x?webdav-username=q", webdav_username="config wins")
        self.assertEqual(l.authorization, "Basic " + base64.b64encode(b"config wins:").decode())

    def test_settings_override_the_url(self):
        l = loc("webdav://u:p@ignored/app", webdav_url="https://cloud.example.com/remote.php/dav",
                webdav_username="bob", webdav_password="pw")
        self.assertEqual(l.origin, "https://cloud.example.com")
        self.assertEqual(l.root, ["remote.php", "dav", "app"])
        self.assertEqual(l.authorization, "Basic " + base64.b64encode(b"bob:pw").decode())

    def test_urls_escape_segments_and_hrefs_map_back_to_keys(self):
        l = loc("webdav://h:1/base%20dir/app")
        self.assertEqual(l.url(["0009", "a b#c.seg"]), "http://h:1/base%20dir/app/0009/a%20b%23c.seg")
        self.assertEqual(l.url(["0009"], collection=True), "http://h:1/base%20dir/app/0009/")
        self.assertEqual(l.url(["ünï"]), "http://h:1/base%20dir/app/%C3%BCn%C3%AF")
        self.assertEqual(l.key_of("/base%20dir/app/0009/a%20b%23c.seg"), "0009/a b#c.seg")
        self.assertEqual(l.key_of("http://h:1/base%20dir/app/x"), "x")
        self.assertIsNone(l.key_of("/base%20dir/app/"), "the root is no key")
        self.assertIsNone(l.key_of("/elsewhere/app/x"))
        self.assertEqual(loc("webdav://h").url([]), "http://h/")

    def test_bad_urls_and_keys_are_configuration_errors(self):
        for url in ["s3://b/x", "webdav:///x", "nothing", "webdav://h/%ff"]:
            with self.assertRaises(ConfigError, msg=url):
                loc(url)
        with self.assertRaises(ConfigError):
            loc("webdav://h/x", webdav_url="ftp://h/")
        for key in ["", "/absolute", "a//b", "../escape", "a/./b", "a/../../b", "a/", "x/.sluice-meta.y"]:
            with self.assertRaises(ConfigError, msg=key):
                check_key(key)
        self.assertEqual(check_key("a/b c/ü"), ["a", "b c", "ü"])


# As wsgidav 4 answers: namespace prefixes, a collection, a file, and a
# property it could not find in a propstat of its own.
ANSWER = b"""<?xml version="1.0" encoding="utf-8" ?>
<ns0:multistatus xmlns:ns0="DAV:">
 <ns0:response><ns0:href>/dav/app/</ns0:href>
  <ns0:propstat><ns0:prop><ns0:resourcetype><ns0:collection /></ns0:resourcetype>
   <ns0:getlastmodified>Thu, 03 Dec 2026 08:00:00 GMT</ns0:getlastmodified></ns0:prop>
   <ns0:status>HTTP/1.1 200 OK</ns0:status></ns0:propstat>
  <ns0:propstat><ns0:prop><ns0:getcontentlength /><ns0:getetag /></ns0:prop>
   <ns0:status>HTTP/1.1 404 Not Found</ns0:status></ns0:propstat>
 </ns0:response>
 <ns0:response><ns0:href>/dav/app/0009/a%20b.seg</ns0:href>
  <ns0:propstat><ns0:prop><ns0:resourcetype /><ns0:getcontentlength>1234</ns0:getcontentlength>
   <ns0:getetag>"1a2b-1234-5678"</ns0:getetag>
   <ns0:getlastmodified>Thu, 03 Dec 2026 08:00:01 GMT</ns0:getlastmodified></ns0:prop>
   <ns0:status>HTTP/1.1 200 OK</ns0:status></ns0:propstat>
 </ns0:response>
</ns0:multistatus>"""


class MultistatusTest(unittest.TestCase):
    def test_parses_collections_and_files(self):
        entries = multistatus.parse(ANSWER)
        self.assertEqual(len(entries), 2)
        self.assertTrue(entries[0].collection)
        self.assertEqual(entries[0].href, "/dav/app/")
        f = entries[1]
        self.assertEqual((f.collection, f.size, f.etag), (False, 1234, "1a2b-1234-5678"))
        self.assertEqual(f.modified_ms, 1_796_284_801_000)

    def test_refuses_what_is_not_a_multistatus(self):
        for body in [b"<html><body>login</body></html>", b"not xml at all <"]:
            with self.assertRaises(ValueError):
                multistatus.parse(body)

    def test_etags_compare_bare(self):
        self.assertEqual(multistatus.bare_etag('W/"abc"'), "abc")
        self.assertEqual(multistatus.bare_etag(' "abc" '), "abc")
        self.assertIsNone(multistatus.http_date_ms("yesterday"))


if __name__ == "__main__":
    unittest.main()
