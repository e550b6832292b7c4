/* Minimal SVG line/scatter plots: axes with ticks, one colour per series, a
 * legend. Points with a non-finite y are skipped (and break a line). */
#include "tools/estimate/estimate.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>

#define W 760.0
#define H 460.0
#define ML 80.0  /* margins: left, right, top, bottom */
#define MR 220.0
#define MT 40.0
#define MB 60.0

static const char *colours[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};

static void xml_text(FILE *f, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '&': fputs("&amp;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(*s, f);
        }
    }
}

/* A "nice" tick step (1, 2 or 5 times a power of ten) for about 6 ticks. */
static double nice_step(double span)
{
    double raw = span / 6, p = pow(10, floor(log10(raw))), r = raw / p;
    return (r < 1.5 ? 1 : r < 3.5 ? 2 : r < 7.5 ? 5 : 10) * p;
}

typedef struct frame {
    double x0, x1, y0, y1;
    bool logx;
} frame_t;

static double px(const frame_t *fr, double x)
{
    double a = fr->logx ? log2(x) : x, lo = fr->logx ? log2(fr->x0) : fr->x0;
    double hi = fr->logx ? log2(fr->x1) : fr->x1;
    return ML + (hi > lo ? (a - lo) / (hi - lo) : 0.5) * (W - ML - MR);
}

static double py(const frame_t *fr, double y)
{
    return H - MB - (fr->y1 > fr->y0 ? (y - fr->y0) / (fr->y1 - fr->y0) : 0.5) * (H - MT - MB);
}

static void axes(FILE *f, const frame_t *fr, const lam_est_plot_t *p)
{
    fprintf(f, "<rect x='%g' y='%g' width='%g' height='%g' fill='none' stroke='#333'/>\n", ML, MT,
            W - ML - MR, H - MT - MB);
    double ys = nice_step(fr->y1 - fr->y0);
    for (double y = ceil(fr->y0 / ys) * ys; y <= fr->y1 + ys * 1e-9; y += ys) {
        double yy = py(fr, y);
        fprintf(f, "<line x1='%g' y1='%.1f' x2='%g' y2='%.1f' stroke='#ddd'/>\n", ML, yy, W - MR, yy);
        fprintf(f, "<text x='%g' y='%.1f' text-anchor='end' font-size='11'>%g</text>\n", ML - 6,
                yy + 4, y);
    }
    if (fr->logx) {
        for (double x = pow(2, ceil(log2(fr->x0))); x <= fr->x1 * (1 + 1e-9); x *= 2) {
            double xx = px(fr, x);
            fprintf(f, "<line x1='%.1f' y1='%g' x2='%.1f' y2='%g' stroke='#ddd'/>\n", xx, MT, xx,
                    H - MB);
            if (x >= 1024)
                fprintf(f, "<text x='%.1f' y='%g' text-anchor='middle' font-size='11'>%gk</text>\n",
                        xx, H - MB + 16, x / 1024);
            else
                fprintf(f, "<text x='%.1f' y='%g' text-anchor='middle' font-size='11'>%g</text>\n",
                        xx, H - MB + 16, x);
        }
    } else {
        double xs = nice_step(fr->x1 - fr->x0);
        for (double x = ceil(fr->x0 / xs) * xs; x <= fr->x1 + xs * 1e-9; x += xs) {
            double xx = px(fr, x);
            fprintf(f, "<line x1='%.1f' y1='%g' x2='%.1f' y2='%g' stroke='#ddd'/>\n", xx, MT, xx,
                    H - MB);
            fprintf(f, "<text x='%.1f' y='%g' text-anchor='middle' font-size='11'>%g</text>\n", xx,
                    H - MB + 16, x);
        }
    }
    fprintf(f, "<text x='%g' y='24' font-size='15' font-weight='bold'>", ML);
    xml_text(f, p->title);
    fprintf(f, "</text>\n<text x='%g' y='%g' text-anchor='middle' font-size='12'>",
            ML + (W - ML - MR) / 2, H - 18);
    xml_text(f, p->xlabel);
    fprintf(f, "</text>\n<text transform='translate(20,%g) rotate(-90)' text-anchor='middle' "
            "font-size='12'>", MT + (H - MT - MB) / 2);
    xml_text(f, p->ylabel);
    fprintf(f, "</text>\n");
}

static void series(FILE *f, const frame_t *fr, const lam_est_series_t *s, int k, bool lines)
{
    const char *col = colours[k % (int)(sizeof colours / sizeof colours[0])];
    bool open = false;
    for (int i = 0; lines && i < s->n; i++) {
        bool ok = isfinite(s->y[i]) && isfinite(s->x[i]) && (!fr->logx || s->x[i] > 0);
        if (ok) {
            fputs(open ? " " : "<polyline fill='none' stroke-width='2' points='", f);
            fprintf(f, "%.1f,%.1f", px(fr, s->x[i]), py(fr, s->y[i]));
            open = true;
        } else if (open) {
            fprintf(f, "' stroke='%s'/>\n", col);
            open = false;
        }
    }
    if (open)
        fprintf(f, "' stroke='%s'/>\n", col);
    for (int i = 0; i < s->n; i++)
        if (isfinite(s->y[i]) && isfinite(s->x[i]) && (!fr->logx || s->x[i] > 0))
            fprintf(f, "<circle cx='%.1f' cy='%.1f' r='%g' fill='%s'/>\n", px(fr, s->x[i]),
                    py(fr, s->y[i]), lines ? 3.0 : 4.5, col);
    double ly = MT + 14 + 18 * k;
    fprintf(f, "<rect x='%g' y='%g' width='12' height='12' fill='%s'/>\n", W - MR + 12, ly - 10, col);
    fprintf(f, "<text x='%g' y='%g' font-size='12'>", W - MR + 30, ly);
    xml_text(f, s->label);
    fprintf(f, "</text>\n");
}

lam_status_t lam_est_svg_write(const char *path, const lam_est_plot_t *p, char *err,
                               size_t errlen)
{
    frame_t fr = {INFINITY, -INFINITY, 0, -INFINITY, p->logx};
    for (int k = 0; k < p->n_series; k++) {
        const lam_est_series_t *s = &p->series[k];
        for (int i = 0; i < s->n; i++) {
            if (!isfinite(s->y[i]) || !isfinite(s->x[i]) || (p->logx && s->x[i] <= 0))
                continue;
            fr.x0 = fmin(fr.x0, s->x[i]);
            fr.x1 = fmax(fr.x1, s->x[i]);
            fr.y0 = fmin(fr.y0, s->y[i]);
            fr.y1 = fmax(fr.y1, s->y[i]);
        }
    }
    if (!isfinite(fr.x0)) { /* nothing feasible: draw empty axes */
        fr.x0 = 1;
        fr.x1 = 2;
        fr.y1 = 1;
    }
    if (!p->logx) {
        fr.x0 = fr.x0 > 0 ? 0 : fr.x0;
        fr.x1 = fr.x1 > fr.x0 ? fr.x1 * 1.05 : fr.x0 + 1;
    }
    fr.y1 = fr.y1 > fr.y0 ? fr.y1 * 1.08 : fr.y0 + 1;
    FILE *f = fopen(path, "w");
    if (!f) {
        snprintf(err, errlen, "%s: cannot write: %s", path, strerror(errno));
        return LAM_ERR_IO;
    }
    fprintf(f, "<svg xmlns='http://www.w3.org/2000/svg' width='%g' height='%g' "
            "font-family='sans-serif'>\n<rect width='100%%' height='100%%' fill='white'/>\n", W, H);
    axes(f, &fr, p);
    for (int k = 0; k < p->n_series; k++)
        series(f, &fr, &p->series[k], k, p->lines);
    fprintf(f, "</svg>\n");
    if (fclose(f) != 0) {
        snprintf(err, errlen, "%s: write failed", path);
        return LAM_ERR_IO;
    }
    return LAM_OK;
}
