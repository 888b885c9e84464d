// webdataset/webdataset_test.cpp — the "webdataset" plugin against tars written by Python's
// tarfile (an independent writer), its NPY parser, shard patterns, bad shards and members named
// in every error, and pack_folder: a folder packed into shards serves the same tensors through
// webdataset as through folder, example by example (Tux Paint's stamps too, when installed).
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <cstring>

#include <turbojpeg.h>

#include "folder/folder_scan.hpp"
#include "media/test_util.hpp"
#include "support.hpp"
#include "webdataset/npy.hpp"
#include "webdataset/pack.hpp"
#include "webdataset/tar_index.hpp"
#include "paths.hpp"

using namespace tessera;
using namespace tessera::test_media;

namespace {

// Writes a tar with Python's tarfile. Each member is "name=@file" (that file's bytes),
// "name=npy:<descr>:<d0,d1,..>:<version>" (values 0, 1, 2, ... * 0.5 in that dtype, header
// written by Python) or "name=text". mode: "w" (pax), "w:gz", or "gnu".
const char* kTarScript = R"PY(
import io, struct, sys, tarfile
out, mode = sys.argv[1], sys.argv[2]
def npy(descr, shape, version):
    n = 1
    for d in shape: n *= d
    code = {'<f4': 'f', '<f8': 'd', '<i8': 'q', '<i4': 'i', '|u1': 'B'}[descr]
    vals = [i * 0.5 if code in 'fd' else i for i in range(n)]
    data = struct.pack('<%d%s' % (n, code), *vals)
    header = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, repr(tuple(shape)))
    pre = 10 if version == 1 else 12
    header += ' ' * (63 - (pre + len(header)) % 64) + '\n'
    size = struct.pack('<H', len(header)) if version == 1 else struct.pack('<I', len(header))
    return b'\x93NUMPY' + bytes([version, 0]) + size + header.encode('latin1') + data
fmt = tarfile.GNU_FORMAT if mode == 'gnu' else tarfile.PAX_FORMAT
with tarfile.open(out, 'w:gz' if mode == 'w:gz' else 'w', format=fmt) as t:
    for arg in sys.argv[3:]:
        name, _, src = arg.partition('=')
        if src.startswith('@'):
            data = open(src[1:], 'rb').read()
        elif src.startswith('npy:'):
            _, descr, shape, version = src.split(':')
            data = npy(descr, [int(d) for d in shape.split(',') if d], int(version))
        else:
            data = src.encode()
        info = tarfile.TarInfo(name)
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
)PY";

void python_tar(const fs::path& out, const std::string& mode, const std::vector<std::string>& members) {
  const fs::path script = out.parent_path() / "make_tar.py";
  write_text(script, kTarScript);
  std::string cmd = "python3 " + script.string() + " " + out.string() + " " + mode;
  for (const auto& m : members) cmd += " '" + m + "'";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
}

// The decode keys of a resolved folder config, as TOML lines for another reader.
std::string decode_keys(const Section& s) {
  std::string out;
  for (const char* k : {"image_height", "image_width", "image_resize", "channels", "alpha", "normalize_mean",
                        "normalize_std", "text_lines", "tokenizer", "text_max_len", "sample_rate", "max_seconds"}) {
    const Value& v = s.value(k);
    out += std::string(k) + " = ";
    if (auto* i = std::get_if<int64_t>(&v)) out += std::to_string(*i);
    else if (auto* d = std::get_if<double>(&v)) out += std::to_string(*d);
    else out += "\"" + std::get<std::string>(v) + "\"";
    out += "\n";
  }
  return out;
}

// Every example of every split: the same fields, the same tensors.
void expect_same_examples(const DatasetInstance& a, const DatasetInstance& b, int64_t stride = 1) {
  ASSERT_EQ(a.splits().size(), b.splits().size());
  for (size_t s = 0; s < a.splits().size(); ++s) {
    const SplitSpec& sa = a.splits()[s];
    ASSERT_EQ(sa.name, b.splits()[s].name);
    ASSERT_EQ(sa.size, b.splits()[s].size) << sa.name;
    for (int64_t i = 0; i < sa.size; i += stride) {
      const TensorMap x = a.get(sa.name, i, 0, 0), y = b.get(sa.name, i, 0, 0);
      ASSERT_EQ(x.size(), y.size());
      for (const auto& [name, t] : x) {
        ASSERT_TRUE(y.count(name)) << name;
        ASSERT_TRUE(t.sizes() == y.at(name).sizes() && at::equal(t, y.at(name)))
            << sa.name << " example " << i << " field " << name;
      }
    }
  }
}

}  // namespace

TEST(WebDatasetNpy, HeadersOfEveryVersionAndDtype) {
  auto npy = [](const std::string& header, int version, const Bytes& data) {
    std::string h = header;
    const size_t pre = version == 1 ? 10 : 12;
    h += std::string(63 - (pre + h.size()) % 64, ' ') + "\n";
    Bytes b = {0x93, 'N', 'U', 'M', 'P', 'Y', static_cast<uint8_t>(version), 0};
    for (size_t i = 0; i < (version == 1 ? 2u : 4u); ++i) b.push_back(static_cast<uint8_t>(h.size() >> (8 * i)));
    b.insert(b.end(), h.begin(), h.end());
    b.insert(b.end(), data.begin(), data.end());
    return b;
  };
  const Bytes i64 = {7, 0, 0, 0, 0, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  Bytes b = npy("{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }", 1, i64);
  at::Tensor t = webdataset::decode_npy(b.data(), b.size(), "x.npy");
  EXPECT_TRUE(at::equal(t, at::tensor({7, -2}, at::kLong)));
  b = npy("{'descr': '|u1', 'fortran_order': False, 'shape': (), }", 2, {42});
  t = webdataset::decode_npy(b.data(), b.size(), "x.npy");
  EXPECT_EQ(t.dim(), 0);
  EXPECT_EQ(t.item<int>(), 42);
  b = npy("{\"shape\": (1, 1), \"fortran_order\": False, \"descr\": \"<f8\"}", 3, Bytes(8, 0));
  EXPECT_EQ(webdataset::decode_npy(b.data(), b.size(), "x.npy").scalar_type(), at::kDouble);

  const std::string ok = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }";
  const Bytes empty_data = npy(ok, 1, {});
  for (const auto& [bytes, why] : std::vector<std::pair<Bytes, std::string>>{
           {npy(ok, 1, Bytes(15, 0)), "data bytes"},
           {npy("{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }", 1, Bytes(4, 0)), "'>f4'"},
           {npy("{'descr': '<f4', 'fortran_order': True, 'shape': (1,), }", 1, Bytes(4, 0)), "Fortran"},
           {npy("{'descr': '<f4', 'shape': (1,), }", 1, Bytes(4, 0)), "lacks"},
           {npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1, x), }", 1, Bytes(4, 0)), "shape"},
           {npy("[1, 2, 3]", 1, {}), "expected '{'"},
           {npy(ok, 4, Bytes(16, 0)), "version 4"},
           {Bytes{'P', 'K', 3, 4, 0, 0, 0, 0, 0, 0, 0}, "magic"},
           {Bytes(empty_data.begin(), empty_data.begin() + 40), "past the end"},
       }) {
    EXPECT_ERROR_MENTIONS(webdataset::decode_npy(bytes.data(), bytes.size(), "s.tar:k.npy"), "s.tar:k.npy", why);
  }
}

TEST(WebDatasetShards, PatternsMemberNamesAndIndex) {
  const fs::path dir = test::temp_dir("wds", "patterns");
  for (const char* n : {"s-000.tar", "s-001.tar", "s-002.tar", "s-003.tar"}) write_text(dir / n, "");
  EXPECT_EQ(webdataset::expand_shards("s-{000..002}.tar", dir.string()).size(), 3u);
  EXPECT_EQ(webdataset::expand_shards((dir / "s-{000,003}.tar").string(), "").back(), (dir / "s-003.tar").string());
  const auto all = webdataset::expand_shards("s-*.tar", dir.string());
  ASSERT_EQ(all.size(), 4u);
  EXPECT_EQ(all[0], (dir / "s-000.tar").string());
  EXPECT_ERROR_MENTIONS(webdataset::expand_shards("t-*.tar", dir.string()), "t-*.tar", "matches no file");
  std::string key, ext;
  EXPECT_TRUE(webdataset::split_member_name("a.b/c/000123.seg.png", &key, &ext));
  EXPECT_EQ(key, "a.b/c/000123");
  EXPECT_EQ(ext, "seg.png");
  EXPECT_FALSE(webdataset::split_member_name("dir/README", &key, &ext));
  EXPECT_FALSE(webdataset::split_member_name("dir/.hidden", &key, &ext));
}

TEST(WebDatasetPlugin, ReadsTarsWrittenByPythonTarfile) {
  if (!have_program("python3")) GTEST_SKIP() << "python3 not installed";
  const fs::path dir = test::temp_dir("wds", "python");
  write_bytes(dir / "p0.png", rgb_png(5, 4, 1));
  write_bytes(dir / "p1.png", rgb_png(3, 3, 2));
  write_bytes(dir / "p2.png", rgb_png(2, 7, 3));
  write_bytes(dir / "t.wav", pcm16_wav(16000, 1600, 0.1));
  {  // a flat 4x4 JPEG
    std::vector<uint8_t> rgb;
    for (int i = 0; i < 16; ++i) rgb.insert(rgb.end(), {200, 100, 50});
    tjhandle tj = tjInitCompress();
    unsigned char* jpeg = nullptr;
    unsigned long size = 0;
    ASSERT_EQ(tjCompress2(tj, rgb.data(), 4, 0, 4, TJPF_RGB, &jpeg, &size, TJSAMP_444, 100, 0), 0);
    write_bytes(dir / "flat.jpg", Bytes(jpeg, jpeg + size));
    tjFree(jpeg);
    tjDestroy(tj);
  }
  const std::string long_key = "b/" + std::string(150, 'x');  // past ustar's 100 bytes: a pax record
  for (const char* mode : {"w", "gnu"}) {
    const fs::path tar = dir / (std::string("train-") + (mode[0] == 'w' ? "pax" : "gnu") + ".tar");
    python_tar(tar, mode, {"a/000.png=@" + (dir / "p0.png").string(), "a/000.txt=first sample", "a/000.cls=3",
                           "a/000.npy=npy:<f4:2,3:1", "a/000.json={}", "a/000.wav=@" + (dir / "t.wav").string(),
                           "a/001.PNG=@" + (dir / "p1.png").string(), "a/001.jpg=@" + (dir / "flat.jpg").string(), "a/001.cls= 7\n", "a/001.npy=npy:<f4:2,3:2",
                           long_key + ".png=@" + (dir / "p2.png").string(), long_key + ".cls=1",
                           long_key + ".npy=npy:<f4:2,3:1", "README=not a sample"});
    auto ds = make_dataset("webdataset", "train = \"" + tar.string() + "\"\nimage = \"png\"\nlabel = \"cls\"\nnpy = \"npy\"\naudio = \"wav\"\n");
    ASSERT_EQ(ds->splits().size(), 1u);
    ASSERT_EQ(ds->splits()[0].size, 3) << mode;
    std::vector<std::string> names;
    for (const auto& f : ds->fields()) names.push_back(f.name + " " + f.shape_str());
    EXPECT_EQ(names, (std::vector<std::string>{"image (3, -1, -1)", "text (-1)", "audio (-1)", "npy (2, 3)", "label ()"}));
    const TensorMap a = ds->get("train", 0, 0, 0);
    EXPECT_TRUE(at::equal(a.at("image"), rgb_pixels(5, 4, 1)));
    EXPECT_EQ(ds->decode_text("text", a.at("text")), "first sample");
    EXPECT_EQ(a.at("label").item<int64_t>(), 3);
    EXPECT_TRUE(at::equal(a.at("npy"), at::arange(6, at::kFloat).mul(0.5).view({2, 3})));
    EXPECT_EQ(a.at("audio").size(0), 1600);
    const TensorMap b = ds->get("train", 1, 0, 0);
    EXPECT_TRUE(at::equal(b.at("image"), rgb_pixels(3, 3, 2)));  // ".PNG": extensions match in any case
    EXPECT_EQ(b.at("text").numel(), 0);
    EXPECT_EQ(b.at("audio").numel(), 0);
    EXPECT_EQ(b.at("label").item<int64_t>(), 7);
    EXPECT_TRUE(at::equal(ds->get("train", 2, 0, 0).at("image"), rgb_pixels(2, 7, 3))) << mode;
    // Alternatives: the first extension present wins, whatever the member order.
    auto jpg_first = make_dataset("webdataset", "train = \"" + tar.string() + "\"\nimage = \"jpg|png\"\n");
    const at::Tensor flat = jpg_first->get("train", 1, 0, 0).at("image");
    EXPECT_EQ(flat.sizes(), at::IntArrayRef({3, 4, 4}));
    EXPECT_LE((flat.mul(255) - at::tensor({200.0f, 100.0f, 50.0f}).view({3, 1, 1})).abs().max().item<float>(), 2.5f);
    auto varying = make_dataset("webdataset", "train = \"" + tar.string() + "\"\nnpy = \"npy\"\nnpy_shape = \"-1 3\"\n");
    EXPECT_EQ(varying->fields()[2].shape_str(), "(-1, 3)");
  }
}

TEST(WebDatasetPlugin, BadShardsAndMembersAreErrorsThatNameThem) {
  if (!have_program("python3")) GTEST_SKIP() << "python3 not installed";
  const fs::path dir = test::temp_dir("wds", "bad");
  write_bytes(dir / "p.png", rgb_png(8, 8, 1));
  const std::vector<std::string> good = {"k0.png=@" + (dir / "p.png").string(), "k0.cls=1", "k1.png=@" + (dir / "p.png").string(),
                                         "k1.cls=2"};
  const fs::path gz = dir / "gz.tar.gz";
  python_tar(gz, "w:gz", good);
  EXPECT_ERROR_MENTIONS(make_dataset("webdataset", "train = \"" + gz.string() + "\"\n"), gz.string(), "compressed", "uncompressed");

  const fs::path tar = dir / "good.tar";
  python_tar(tar, "w", good);
  const Bytes whole = read_bytes(tar);
  // Truncated inside the second member's data, and inside its header.
  const std::vector<webdataset::TarMember> members = webdataset::index_tar(tar.string());
  ASSERT_EQ(members.size(), 4u);
  for (int64_t cut : {members[2].offset + members[2].size / 2, members[2].offset - 300}) {
    const fs::path t = dir / ("cut" + std::to_string(cut) + ".tar");
    write_bytes(t, Bytes(whole.begin(), whole.begin() + cut));
    EXPECT_ERROR_MENTIONS(make_dataset("webdataset", "train = \"" + t.string() + "\"\nlabel = \"cls\"\n"), t.string());
  }
  // A damaged header (its checksum no longer matches).
  Bytes damaged = whole;
  damaged[static_cast<size_t>(members[1].offset) - 512 + 3] ^= 0x20;
  write_bytes(dir / "damaged.tar", damaged);
  EXPECT_ERROR_MENTIONS(make_dataset("webdataset", "train = \"" + (dir / "damaged.tar").string() + "\"\n"),
                        (dir / "damaged.tar").string());
  // A corrupt member: the tar is fine, the PNG inside is not.
  Bytes corrupt = whole;
  for (int64_t i = members[2].offset + 20; i < members[2].offset + members[2].size; ++i) corrupt[static_cast<size_t>(i)] = 0x41;
  write_bytes(dir / "corrupt.tar", corrupt);
  auto ds = make_dataset("webdataset", "train = \"" + (dir / "corrupt.tar").string() + "\"\nlabel = \"cls\"\n");
  EXPECT_EQ(ds->get("train", 0, 0, 0).at("label").item<int64_t>(), 1);
  EXPECT_ERROR_MENTIONS(ds->get("train", 1, 0, 0), (dir / "corrupt.tar").string() + ":k1.png");
  // A member that is not a label, an npy with a bad header, a repeated extension.
  python_tar(dir / "odd.tar", "w", {"k0.png=@" + (dir / "p.png").string(), "k0.cls=one", "k0.npy=npy:<f4:2:1",
                                    "k1.png=@" + (dir / "p.png").string(), "k1.cls=2", "k1.npy=junk, not an array",
                                    "k2.png=@" + (dir / "p.png").string(), "k2.cls=2", "k2.npy=npy:<i8:2:1"});
  auto odd = make_dataset("webdataset", "train = \"" + (dir / "odd.tar").string() + "\"\nlabel = \"cls\"\nnpy = \"npy\"\n");
  EXPECT_ERROR_MENTIONS(odd->get("train", 0, 0, 0), (dir / "odd.tar").string() + ":k0.cls", "not an integer");
  EXPECT_ERROR_MENTIONS(odd->get("train", 1, 0, 0), (dir / "odd.tar").string() + ":k1.npy", "bad .npy");
  EXPECT_ERROR_MENTIONS(odd->get("train", 2, 0, 0), (dir / "odd.tar").string() + ":k2.npy", "the npy field is Float");
  python_tar(dir / "twice.tar", "w", {"k0.png=@" + (dir / "p.png").string(), "k0.png=@" + (dir / "p.png").string()});
  EXPECT_ERROR_MENTIONS(make_dataset("webdataset", "train = \"" + (dir / "twice.tar").string() + "\"\n"), "twice.tar", "k0.png");
  // Patterns that match nothing; samples without the required field.
  EXPECT_ERROR_MENTIONS(make_dataset("webdataset", "root = \"" + dir.string() + "\"\ntrain = \"none-*.tar\"\n"), "none-*.tar");
  EXPECT_ERROR_MENTIONS(make_dataset("webdataset", "train = \"" + tar.string() + "\"\nrequired = [\"text\"]\n"), "no samples",
                        "has no text");
  EXPECT_ERROR_MENTIONS(make_dataset("webdataset", "train = \"" + tar.string() + "\"\ntokenizer = \"" + (dir / "no.model").string() + "\"\n"),
                        (dir / "no.model").string());
}

TEST(WebDatasetPack, FolderPackedToShardsServesTheSameTensors) {
  const fs::path root = test::temp_dir("wds", "packsrc");
  for (int i = 0; i < 11; ++i) {
    const fs::path cls = root / (i % 3 ? "birds" : "cats");
    write_bytes(cls / ("s" + std::to_string(i) + ".png"), rgb_png(7 + i, 5 + i % 4, i));
    if (i % 2) write_text(cls / ("s" + std::to_string(i) + ".txt"), "Caption " + std::to_string(i) + "\nsecond line");
    if (i % 4 == 1) write_bytes(cls / ("s" + std::to_string(i) + "_desc.wav"), pcm16_wav(22050, 5000 + i, 0.03));
  }
  write_bytes(root / "cats/dotted.name.png", rgb_png(4, 4, 9));
  write_ogg(root / "birds/s2_desc.ogg", 11025, 3000);
  write_text(root / "birds/orphan.txt", "no picture");
  const std::string keys = "root = \"" + root.string() + "\"\ntext = \"{stem}.txt\"\naudio = \"{stem}_desc.wav|{stem}_desc.ogg\"\n"
                           "val_fraction = 0.3\nimage_height = 9\nimage_width = 7\nimage_resize = \"crop\"\ntext_lines = \"first\"\n"
                           "sample_rate = 8000\n";
  auto from_folder = make_dataset("folder", keys);
  const folder::FolderScan scan = folder::scan_folder(folder::folder_options(from_folder->config()));
  EXPECT_EQ(scan.skipped, 1);
  const fs::path out = test::temp_dir("wds", "packed");
  const auto packed = webdataset::pack_folder(scan, out.string(), 3);
  ASSERT_EQ(packed.size(), 2u);
  EXPECT_EQ(packed[0].samples + packed[1].samples, 12);
  EXPECT_EQ(packed[0].shards.size(), static_cast<size_t>((packed[0].samples + 2) / 3));
  // The members: original bytes under "<key>.<ext>", and the label.
  const auto members = webdataset::index_tar(packed[0].shards[0]);
  ASSERT_FALSE(members.empty());
  EXPECT_EQ(members[0].name.substr(0, 6), "birds/");

  auto from_tars = make_dataset("webdataset", "root = \"" + out.string() + "\"\ntrain = \"train-*.tar\"\nval = \"val-*.tar\"\n"
                                              "image = \"png\"\ntext = \"txt\"\naudio = \"wav|ogg\"\nlabel = \"cls\"\n"
                                              "class_names = \"classes.txt\"\n" + decode_keys(from_folder->config()));
  expect_same_examples(*from_folder, *from_tars);
  EXPECT_EQ(from_tars->metadata_text("class_names"), from_folder->metadata_text("class_names"));
  // Packing twice gives the same bytes.
  const fs::path again = test::temp_dir("wds", "packed_again");
  const auto packed2 = webdataset::pack_folder(scan, again.string(), 3);
  EXPECT_EQ(read_bytes(packed2[0].shards[0]), read_bytes(packed[0].shards[0]));
}

TEST(WebDatasetPack, TuxPaintStampsPackedServeTheSameTensors) {
  if (!fs::exists("/usr/share/tuxpaint/stamps")) GTEST_SKIP() << "tuxpaint-stamps-default not installed";
  auto from_folder = make_dataset(Config::load(TESSERA_SOURCE_DIR + "/configs/data/tuxpaint_stamps.toml"), "folder");
  const folder::FolderScan scan = folder::scan_folder(folder::folder_options(from_folder->config()));
  const fs::path out = test::temp_dir("wds", "stamps");
  const auto packed = webdataset::pack_folder(scan, out.string(), 100);
  auto from_tars = make_dataset("webdataset", "root = \"" + out.string() + "\"\ntrain = \"train-*.tar\"\nval = \"val-*.tar\"\n"
                                              "image = \"png\"\ntext = \"txt\"\naudio = \"ogg\"\nlabel = \"cls\"\n"
                                              "class_names = \"classes.txt\"\n" + decode_keys(from_folder->config()));
  expect_same_examples(*from_folder, *from_tars, /*stride=*/7);
  EXPECT_EQ(from_tars->metadata_text("class_names").size(), 16u);
  fs::remove_all(out);
}
