#!/usr/bin/env python3
"""Makes the media of the sample scenario examples/four-teams: drawn
pictures, two short silent clips and one-page PDF attachments, all small
and self-made (no outside asset). Needs ffmpeg, on PATH or from the
`imageio-ffmpeg` package. Run from the repository root; the files land in
examples/four-teams/media/."""

import os
import shutil
import subprocess
import sys

OUT = os.path.join("examples", "four-teams", "media")


def ffmpeg():
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg
    except ImportError:
        sys.exit("needs ffmpeg on PATH or `pip install imageio-ffmpeg`")
    return imageio_ffmpeg.get_ffmpeg_exe()


def boxes(*specs):
    """drawbox filters: (x, y, w, h, colour) each, filled."""
    return ",".join(f"drawbox=x={x}:y={y}:w={w}:h={h}:color={c}:t=fill" for x, y, w, h, c in specs)


# Pictures: a source, the boxes drawn over it, the output name.
PICTURES = [
    # Berths 5 to 9 along a quay, berth 7 with the burning ship in red.
    ("color=c=0x2f6f9f:s=320x200", boxes(
        (0, 0, 320, 70, "0x8a8f93"), (20, 70, 280, 6, "0x55595c"),
        (30, 80, 40, 14, "0x3d4a57"), (85, 80, 40, 14, "0x3d4a57"),
        (140, 78, 60, 18, "0xc0392b"), (215, 80, 40, 14, "0x3d4a57"),
        (20, 10, 30, 50, "0xd9c27a"), (60, 10, 30, 50, "0xd9c27a"),
        (230, 10, 70, 20, "0x6b7075"), (160, 30, 20, 20, "0xe67e22"),
    ), "berth7-site-map.png"),
    # A radar-style traffic picture: three inbound vessels on a dark screen.
    ("color=c=0x0b1d14:s=320x200", boxes(
        (0, 98, 320, 2, "0x1f5f3f"), (158, 0, 2, 200, "0x1f5f3f"),
        (40, 40, 8, 8, "0x2ecc71"), (250, 60, 8, 8, "0x2ecc71"),
        (90, 150, 8, 8, "0xf1c40f"), (150, 92, 14, 14, "0xe74c3c"),
    ), "vts-traffic-picture.png"),
    # The St Brendan's location: a coast and a marker.
    ("color=c=0x9ec9e2:s=320x200", boxes(
        (0, 120, 320, 80, "0xb8c99a"), (0, 110, 200, 10, "0xe8dcb0"),
        (200, 100, 120, 20, "0xe8dcb0"), (210, 60, 12, 12, "0xc0392b"),
    ), "st-brendan-location.png"),
    # A screenshot of an inspection record: a page of grey lines.
    ("color=c=0xf4f4f4:s=320x200", boxes(
        (0, 0, 320, 24, "0x2c3e50"), (16, 40, 200, 8, "0xb0b0b0"),
        (16, 58, 260, 8, "0xc8c8c8"), (16, 76, 240, 8, "0xc8c8c8"),
        (16, 94, 180, 8, "0xc8c8c8"), (16, 120, 120, 16, "0xe74c3c"),
        (16, 150, 280, 8, "0xc8c8c8"), (16, 168, 220, 8, "0xc8c8c8"),
    ), "psc-inspection-screenshot.png"),
    # Smoke over the terminal: dark grey gradients over a low skyline.
    ("gradients=s=320x200:c0=0x30302f:c1=0x9a9a98:c2=0xd08040:n=3:seed=7:duration=1", boxes(
        (0, 160, 320, 40, "0x1e2326"), (40, 140, 30, 20, "0x2a3035"),
        (200, 130, 50, 30, "0x2a3035"),
    ), "smoke-over-terminal.jpg"),
    # The drone clip's still: the plume from above.
    ("gradients=s=320x180:c0=0x4a5a48:c1=0x777773:c2=0x2c2c2c:n=3:seed=3:duration=1", boxes(
        (0, 140, 320, 40, "0x3a4a5a"),
    ), "drone-plume-eastharbour-still.jpg"),
]

# Clips: a drifting gradient (the plume) and a dark shaking one (a bodycam).
CLIPS = [
    ("gradients=s=160x90:c0=0x4a5a48:c1=0x9a9a98:c2=0x2c2c2c:n=3:seed=3:speed=0.05:r=10",
     "drone-plume-eastharbour.webm"),
    ("gradients=s=160x90:c0=0x202020:c1=0xd06020:c2=0x404850:n=3:seed=11:speed=0.08:r=10",
     "bodycam-bay34.webm"),
]

# Attachments: one-page PDFs, each with a title and a line of text.
DOCUMENTS = [
    ("nordic-aurora-dg-manifest.pdf", "MV Nordic Aurora: dangerous goods manifest",
     "Exercise material. Bay 34: 48 containers, UN 3480 lithium-ion batteries, class 9."),
    ("bay-plan-34.pdf", "MV Nordic Aurora: bay plan, bay 34",
     "Exercise material. Rows 01 to 12, tiers 82 to 90; battery containers in rows 04 to 09."),
    ("inbound-traffic-1000.pdf", "Inbound traffic at 10:00",
     "Exercise material. Baltic Fern ETA 10:40, Island Star 10:55, Merrow 11:30."),
    ("psc-report-march.pdf", "Port state control report, March",
     "Exercise material. Three deficiencies recorded, none detaining; fire doors to be checked."),
]


def pdf(title, line):
    text = f"BT /F1 16 Tf 56 780 Td ({title}) Tj /F1 11 Tf 0 -28 Td ({line}) Tj ET"
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
        "/Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        f"<< /Length {len(text)} >>\nstream\n{text}\nendstream",
    ]
    out = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{o:010d} 00000 n \n" for o in offsets).encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


def main():
    exe = ffmpeg()
    os.makedirs(OUT, exist_ok=True)
    run = lambda *args: subprocess.run([exe, "-hide_banner", "-loglevel", "error", "-y", *args], check=True)
    for source, draw, name in PICTURES:
        quality = ["-q:v", "6"] if name.endswith(".jpg") else ["-pix_fmt", "rgb24"]
        run("-f", "lavfi", "-i", source, "-vf", draw, "-frames:v", "1", *quality,
            "-map_metadata", "-1", os.path.join(OUT, name))
    for source, name in CLIPS:
        run("-f", "lavfi", "-i", source, "-t", "4", "-pix_fmt", "yuv420p", "-c:v", "libvpx", "-b:v", "60k",
            "-an", "-map_metadata", "-1", "-fflags", "+bitexact", os.path.join(OUT, name))
    for name, title, line in DOCUMENTS:
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(pdf(title, line))


if __name__ == "__main__":
    main()
