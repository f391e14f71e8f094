// sprout's chat page: three domains (eco challenges, books, free chat) over the server's own
// streaming endpoints. Plain JS, no build step: every answer is read with fetch and parsed as
// Server-Sent Events here, so that HTTP statuses (401, 429/503 with Retry-After) are visible.
'use strict';

(() => {
  // ---------------------------------------------------------------- strings
  const STRINGS = {
    ko: {
      skip: '입력창으로 건너뛰기', domains: '도메인', domainEco: '친환경 챌린지', domainBooks: '책 추천',
      domainChat: '자유 대화', language: '언어', reset: '새 대화', dev: '개발자', ecoKeywords: '기본 정보',
      location: '사는 곳', workType: '근무 형태', category: '챌린지 분야', ecoSend: '이 조건으로 추천받기',
      conversation: '대화', message: '메시지', send: '보내기', stop: '멈추기',
      hint: 'Enter로 보내고 Shift+Enter로 줄을 바꿉니다.', devTitle: '개발자 패널', ttft: '첫 토큰까지',
      tps: '초당 토큰', promptTokens: '프롬프트 토큰', cachedTokens: '캐시된 토큰', completionTokens: '생성 토큰',
      forcedTokens: '강제 토큰', elapsed: '전체 시간', rawJson: '마지막 응답 JSON',
      keyTitle: 'API 키가 필요합니다',
      keyHelp: '이 서버는 --api-key로 보호되어 있습니다. 키를 한 번 입력하면 이 브라우저에 저장됩니다.',
      keyWrong: '키가 맞지 않습니다. 다시 입력해 주세요.', keyLabel: 'API 키', cancel: '취소', save: '저장',
      introEco: '사는 곳, 근무 형태, 챌린지 분야를 고르거나 환경에 관한 이야기를 자유롭게 적어 주세요. 세 가지 챌린지를 추천해 드립니다.',
      introBooks: '다섯 가지 질문에 답하시면 지금의 마음에 맞는 책 세 권을 추천해 드립니다.',
      introChat: '모델과 자유롭게 대화합니다. 대화 내용은 이 브라우저에만 저장됩니다.',
      placeholderEco: '예: 회사에서 플라스틱을 줄이고 싶어요', placeholderBooks: '답변을 입력하세요',
      placeholderBooksDone: '새 대화를 눌러 다시 시작하세요', placeholderChat: '메시지를 입력하세요',
      you: '나', bot: 'sprout', thinking: '답변을 만드는 중…', fullAnswer: '전체 답변 보기',
      booksLead: '지금의 당신에게 어울리는 책 세 권입니다.', reason: '추천 이유', benefit: '도움이 되는 이유',
      question: '질문 {n}/5', example: '예시', restartBooks: '다시 추천받기',
      errBusy: '지금 서버가 혼잡합니다. {s}초 뒤에 다시 시도해 주세요.', errBusyNow: '지금 서버가 혼잡합니다. 잠시 뒤에 다시 시도해 주세요.',
      errNetwork: '서버에 연결할 수 없습니다. 서버가 실행 중인지 확인해 주세요.',
      errBooksOff: '이 서버에는 도서 카탈로그가 없습니다. sprout serve --catalog books=파일 로 다시 시작해 주세요.',
      errInput: '입력을 확인해 주세요.', errFailed: '답변을 만들지 못했습니다. 다시 시도해 주세요.',
      errAuth: 'API 키가 없어 요청하지 못했습니다.', errEnded: '답변이 중간에 끊겼습니다. 다시 시도해 주세요.',
      errNotFound: '이 서버에는 이 기능이 없습니다.', stopped: '(멈춤)',
      seconds: '{v}초', ms: '{v} ms', perSecond: '{v} 토큰/초',
    },
    en: {
      skip: 'Skip to the message box', domains: 'Domain', domainEco: 'Eco challenges', domainBooks: 'Books',
      domainChat: 'Free chat', language: 'Language', reset: 'New chat', dev: 'Developer', ecoKeywords: 'Basic info',
      location: 'Where you live', workType: 'How you work', category: 'Challenge area', ecoSend: 'Recommend for these',
      conversation: 'Conversation', message: 'Message', send: 'Send', stop: 'Stop',
      hint: 'Enter sends, Shift+Enter starts a new line.', devTitle: 'Developer panel', ttft: 'Time to first token',
      tps: 'Tokens per second', promptTokens: 'Prompt tokens', cachedTokens: 'Cached tokens',
      completionTokens: 'Completion tokens', forcedTokens: 'Forced tokens', elapsed: 'Total time',
      rawJson: 'Raw JSON of the last answer', keyTitle: 'An API key is needed',
      keyHelp: 'This server runs with --api-key. Enter the key once; this browser keeps it.',
      keyWrong: 'That key was refused. Please enter it again.', keyLabel: 'API key', cancel: 'Cancel', save: 'Save',
      introEco: 'Pick where you live, how you work and a challenge area, or write freely about the environment. You get three challenges.',
      introBooks: 'Answer five questions and get three books that fit how you feel right now.',
      introChat: 'Chat freely with the model. The conversation is kept in this browser only.',
      placeholderEco: 'e.g. I want to use less plastic at work', placeholderBooks: 'Type your answer',
      placeholderBooksDone: 'Press New chat to start again', placeholderChat: 'Type a message',
      you: 'You', bot: 'sprout', thinking: 'Writing an answer…', fullAnswer: 'Show the whole answer',
      booksLead: 'Three books for you right now.', reason: 'Why this book', benefit: 'How it can help',
      question: 'Question {n}/5', example: 'Examples', restartBooks: 'Recommend again',
      errBusy: 'The server is busy. Please try again in {s} s.', errBusyNow: 'The server is busy. Please try again in a moment.',
      errNetwork: 'Cannot reach the server. Is it running?', errInput: 'Please check your input.',
      errBooksOff: 'This server has no book catalog. Restart it with sprout serve --catalog books=FILE.',
      errFailed: 'No answer could be made. Please try again.', errAuth: 'No API key, so the request was not sent.',
      errEnded: 'The answer stopped halfway. Please try again.', errNotFound: 'This server does not offer this.',
      stopped: '(stopped)', seconds: '{v} s', ms: '{v} ms', perSecond: '{v} tokens/s',
    },
    zh: {
      skip: '跳到输入框', domains: '领域', domainEco: '环保挑战', domainBooks: '图书推荐', domainChat: '自由对话',
      language: '语言', reset: '新对话', dev: '开发者', ecoKeywords: '基本信息', location: '居住地',
      workType: '工作类型', category: '挑战类别', ecoSend: '按这些条件推荐', conversation: '对话', message: '消息',
      send: '发送', stop: '停止', hint: '按 Enter 发送，Shift+Enter 换行。', devTitle: '开发者面板',
      ttft: '首个词元用时', tps: '每秒词元', promptTokens: '提示词元', cachedTokens: '缓存词元',
      completionTokens: '生成词元', forcedTokens: '强制词元', elapsed: '总用时', rawJson: '最后一次回答的 JSON',
      keyTitle: '需要 API 密钥', keyHelp: '此服务器使用 --api-key 保护。输入一次密钥后，本浏览器会记住它。',
      keyWrong: '密钥不正确，请重新输入。', keyLabel: 'API 密钥', cancel: '取消', save: '保存',
      introEco: '选择居住地、工作类型和挑战类别，或自由写下与环境有关的内容，即可获得三个挑战推荐。',
      introBooks: '回答五个问题，获得三本适合你此刻心情的书。',
      introChat: '与模型自由对话。对话只保存在此浏览器中。',
      placeholderEco: '例如：我想在公司少用塑料', placeholderBooks: '请输入回答',
      placeholderBooksDone: '点击“新对话”重新开始', placeholderChat: '请输入消息',
      you: '我', bot: 'sprout', thinking: '正在生成回答…', fullAnswer: '查看完整回答',
      booksLead: '这三本书适合现在的你。', reason: '推荐理由', benefit: '能带来的帮助',
      question: '问题 {n}/5', example: '示例', restartBooks: '重新推荐',
      errBusy: '服务器繁忙，请在 {s} 秒后重试。', errBusyNow: '服务器繁忙，请稍后重试。',
      errNetwork: '无法连接服务器，请确认它正在运行。', errInput: '请检查输入内容。',
      errBooksOff: '此服务器没有图书目录。请用 sprout serve --catalog books=文件 重新启动。',
      errFailed: '未能生成回答，请重试。', errAuth: '没有 API 密钥，请求未发送。',
      errEnded: '回答中途中断了，请重试。', errNotFound: '此服务器不提供该功能。', stopped: '（已停止）',
      seconds: '{v} 秒', ms: '{v} 毫秒', perSecond: '{v} 词元/秒',
    },
  };

  // The Leafresh front end's options: the value sent, its Korean label, and the other languages.
  const KEYWORDS = {
    location: [
      ['city', '도시', 'City', '城市'], ['beach', '바닷가', 'Seaside', '海边'],
      ['mountain', '산', 'Mountains', '山区'], ['rural', '농촌', 'Countryside', '农村'],
    ],
    workType: [
      ['office', '사무직', 'Office work', '办公室工作'], ['field', '현장직', 'Field work', '现场工作'],
      ['sales', '영업직', 'Sales', '销售'], ['remote', '재택근무', 'Remote work', '居家办公'],
    ],
    category: [
      ['ZERO_WASTE', '제로웨이스트', 'Zero waste', '零浪费'], ['PLOGGING', '플로깅', 'Plogging', '拾跑'],
      ['CARBON_FOOTPRINT', '탄소발자국', 'Carbon footprint', '碳足迹'],
      ['ENERGY_SAVING', '에너지 절약', 'Energy saving', '节约能源'], ['UPCYCLING', '업사이클', 'Upcycling', '升级再造'],
      ['MEDIA', '문화 공유', 'Culture sharing', '文化分享'], ['DIGITAL_CARBON', '디지털 탄소', 'Digital carbon', '数字碳排放'],
      ['VEGAN', '비건', 'Vegan', '纯素'],
    ],
  };
  const LANG_COLUMN = { ko: 1, en: 2, zh: 3 };
  const DOMAINS = ['eco', 'books', 'chat'];
  const BOOK_FIELDS = ['user_emotion', 'desired_emotional_effect', 'occupation', 'reading_context', 'focus_level'];
  const CHAT_HISTORY_MESSAGES = 20;
  const STORE = 'sprout.';

  // ---------------------------------------------------------------- state
  const load = (key, fallback) => {
    try {
      const v = localStorage.getItem(STORE + key);
      return v === null ? fallback : JSON.parse(v);
    } catch (_) {
      return fallback;
    }
  };
  const save = (key, value) => {
    try {
      localStorage.setItem(STORE + key, JSON.stringify(value));
    } catch (_) { /* private mode or full: the page still works, it just forgets */ }
  };

  const newSessionId = () => {
    if (window.crypto && crypto.randomUUID && window.isSecureContext) return crypto.randomUUID();
    const b = new Uint8Array(16);
    crypto.getRandomValues(b);
    return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  };

  const state = {
    lang: STRINGS[load('lang', 'ko')] ? load('lang', 'ko') : 'ko',
    domain: DOMAINS.includes(load('domain', 'eco')) ? load('domain', 'eco') : 'eco',
    sessionId: load('sessionId', null) || newSessionId(),
    apiKey: load('apiKey', ''),
    devOpen: load('devOpen', false) === true,
    conv: {},
    busy: null, // {controller, domain} while an answer streams
    asking: false, // while the next book question is being fetched
    model: null,
  };
  save('sessionId', state.sessionId);

  const emptyConv = (domain) => ({
    messages: [],
    selected: domain === 'eco' ? {} : undefined,
    books: domain === 'books' ? { index: 0, answers: [], done: false } : undefined,
  });
  for (const d of DOMAINS) {
    const c = load('conv.' + d, null);
    state.conv[d] = c && Array.isArray(c.messages) ? c : emptyConv(d);
  }
  const conv = () => state.conv[state.domain];
  const persist = (domain = state.domain) => save('conv.' + domain, state.conv[domain]);

  // ---------------------------------------------------------------- dom
  const $ = (sel) => document.querySelector(sel);
  const el = (tag, attrs = {}, ...children) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : v);
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  };
  const t = (key, params = {}) => {
    const s = STRINGS[state.lang][key] ?? STRINGS.ko[key] ?? key;
    return s.replace(/\{(\w+)\}/g, (_, p) => String(params[p] ?? ''));
  };
  const keywordLabel = (field, value) => {
    const row = KEYWORDS[field].find((r) => r[0] === value);
    return row ? row[LANG_COLUMN[state.lang]] : value;
  };

  // Text with **bold** and real newlines (the CSS keeps them), built as nodes: model output is
  // never parsed as HTML.
  const richText = (text) => {
    const frag = document.createDocumentFragment();
    for (const part of String(text).split(/(\*\*[^*\n]+\*\*)/)) {
      if (part.startsWith('**') && part.endsWith('**') && part.length > 4) {
        frag.append(el('strong', { text: part.slice(2, -2) }));
      } else if (part) {
        frag.append(document.createTextNode(part));
      }
    }
    return frag;
  };

  // ---------------------------------------------------------------- rendering
  const log = $('#log');

  // The page follows a streaming answer unless the reader has scrolled up to read.
  const nearEnd = () => {
    const s = document.scrollingElement;
    return s.scrollHeight - s.scrollTop - window.innerHeight < 120;
  };
  const scrollToEnd = (follow) => {
    if (follow) window.scrollTo(0, document.scrollingElement.scrollHeight);
  };

  const messageText = (m) => (m.i18n ? t(m.i18n.key, m.i18n.params) : m.text || '');

  const ecoCards = (challenges) =>
    el('ol', { class: 'cards', 'aria-label': t('domainEco') },
      ...challenges.map((c) => el('li', { class: 'card eco-card' },
        el('span', { class: 'card-tag', text: keywordLabel('category', c.category) }),
        el('h3', { class: 'card-title', text: c.title }),
        el('p', { class: 'card-body', text: c.description || '' }))));

  const bookCards = (books) =>
    el('ol', { class: 'cards', 'aria-label': t('domainBooks') },
      ...books.map((b) => el('li', { class: 'card book-card' },
        el('h3', { class: 'card-title', text: b.title }),
        b.author ? el('p', { class: 'card-author', text: b.author }) : null,
        b.reason ? el('p', { class: 'card-body' }, el('strong', { text: t('reason') + ': ' }), b.reason) : null,
        b.benefit ? el('p', { class: 'card-body' }, el('strong', { text: t('benefit') + ': ' }), b.benefit) : null)));

  const renderMessage = (m, isLast) => {
    const body = el('div', { class: 'bubble-text' });
    body.append(richText(messageText(m)));
    const box = el('div', { class: 'bubble' }, body);
    if (m.detail) box.append(el('p', { class: 'detail', text: m.detail }));
    if (m.cards && m.cards.kind === 'eco' && m.cards.items.length) box.append(ecoCards(m.cards.items));
    if (m.cards && m.cards.kind === 'books' && m.cards.items.length) box.append(bookCards(m.cards.items));
    if (m.full) {
      box.append(el('details', { class: 'full' }, el('summary', { text: t('fullAnswer') }),
        el('div', { class: 'bubble-text' }, richText(m.full))));
    }
    if (isLast && m.replies && m.replies.length && !state.busy) {
      box.append(el('div', { class: 'replies' }, ...m.replies.map((r) => el('button', {
        type: 'button', class: 'chip reply', text: r.label || t(r.key),
        onclick: () => quickReply(r),
      }))));
    }
    return el('div', {
      class: `msg ${m.role}${m.kind ? ' ' + m.kind : ''}${m.cards && m.cards.items.length ? ' has-cards' : ''}`,
      'data-state': m.state || 'done',
    }, el('span', { class: 'who', text: m.role === 'user' ? t('you') : t('bot') }), box);
  };

  const renderLog = () => {
    log.replaceChildren(...conv().messages.map((m, i, all) => renderMessage(m, i === all.length - 1)));
    scrollToEnd(true);
  };

  const renderKeywords = () => {
    const selected = state.conv.eco.selected || {};
    for (const box of document.querySelectorAll('.chips[data-field]')) {
      const field = box.dataset.field;
      // Built once, then only updated: a keyboard user's focus stays on the chip it pressed.
      if (box.children.length !== KEYWORDS[field].length) {
        box.replaceChildren(...KEYWORDS[field].map(([value]) => el('button', {
          type: 'button', class: 'chip', 'data-value': value,
          onclick: () => {
            const s = state.conv.eco.selected || (state.conv.eco.selected = {});
            s[field] = s[field] === value ? undefined : value;
            persist('eco');
            renderKeywords();
          },
        })));
      }
      for (const b of box.children) {
        b.setAttribute('aria-pressed', selected[field] === b.dataset.value ? 'true' : 'false');
        b.textContent = keywordLabel(field, b.dataset.value);
      }
    }
    $('#eco-send').disabled = !!state.busy || !['location', 'workType', 'category'].every((f) => selected[f]);
  };

  const renderChrome = () => {
    document.documentElement.lang = state.lang;
    for (const e of document.querySelectorAll('[data-i18n]')) e.textContent = t(e.dataset.i18n);
    for (const e of document.querySelectorAll('[data-i18n-label]')) e.setAttribute('aria-label', t(e.dataset.i18nLabel));
    $('#lang').value = state.lang;
    for (const b of document.querySelectorAll('.domain')) {
      b.setAttribute('aria-pressed', b.dataset.domain === state.domain ? 'true' : 'false');
    }
    document.body.dataset.domain = state.domain;
    $('#eco-keywords').hidden = state.domain !== 'eco';
    const intro = { eco: 'introEco', books: 'introBooks', chat: 'introChat' }[state.domain];
    $('#intro').textContent = t(intro);
    const input = $('#composer-input');
    const booksDone = state.domain === 'books' && conv().books.done;
    input.placeholder = t({ eco: 'placeholderEco', books: booksDone ? 'placeholderBooksDone' : 'placeholderBooks', chat: 'placeholderChat' }[state.domain]);
    input.disabled = booksDone;
    $('#send').disabled = !!state.busy || booksDone;
    $('#send').hidden = !!state.busy;
    $('#stop').hidden = !state.busy;
    $('#dev').hidden = !state.devOpen;
    $('#dev-toggle').setAttribute('aria-pressed', state.devOpen ? 'true' : 'false');
    renderKeywords();
  };

  const render = () => {
    renderChrome();
    renderLog();
  };

  // ---------------------------------------------------------------- developer panel
  const dev = {
    show(stats, raw) {
      const fmt = (v, key) => (v === undefined || v === null || Number.isNaN(v) ? '—' : (key ? t(key, { v }) : String(v)));
      $('#stat-ttft').textContent = fmt(stats.ttftMs === undefined ? undefined : Math.round(stats.ttftMs), 'ms');
      $('#stat-tps').textContent = fmt(stats.tokensPerSecond === undefined ? undefined : stats.tokensPerSecond.toFixed(1), 'perSecond');
      $('#stat-prompt').textContent = fmt(stats.usage && stats.usage.prompt_tokens);
      $('#stat-cached').textContent = fmt(stats.usage && stats.usage.cached_tokens);
      $('#stat-completion').textContent = fmt(stats.usage && stats.usage.completion_tokens);
      $('#stat-forced').textContent = fmt(stats.usage && stats.usage.forced_tokens);
      $('#stat-total').textContent = fmt(stats.totalMs === undefined ? undefined : (stats.totalMs / 1000).toFixed(2), 'seconds');
      if (raw !== undefined) $('#raw').textContent = JSON.stringify(raw, null, 2);
    },
  };
  // Both shapes: sprout's flat usage event and OpenAI's nested details.
  const normalizeUsage = (u) => {
    if (!u || typeof u !== 'object') return undefined;
    const n = (v) => (typeof v === 'number' ? v : undefined);
    return {
      prompt_tokens: n(u.prompt_tokens),
      completion_tokens: n(u.completion_tokens),
      cached_tokens: n(u.cached_tokens) ?? n(u.prompt_tokens_details && u.prompt_tokens_details.cached_tokens),
      forced_tokens: n(u.forced_tokens) ?? n(u.completion_tokens_details && u.completion_tokens_details.forced_tokens),
    };
  };

  // One answer's clock: TTFT from the request to the first text, tokens/s over the generation.
  class Clock {
    constructor() { this.start = performance.now(); this.first = undefined; this.end = undefined; }
    text() { if (this.first === undefined) this.first = performance.now(); }
    stats(usage) {
      const end = this.end ?? performance.now();
      const s = { totalMs: end - this.start, usage };
      if (this.first !== undefined) s.ttftMs = this.first - this.start;
      const genSeconds = this.first !== undefined ? (end - this.first) / 1000 : 0;
      if (usage && usage.completion_tokens && genSeconds > 0) s.tokensPerSecond = usage.completion_tokens / genSeconds;
      return s;
    }
  }

  // ---------------------------------------------------------------- http
  class Friendly extends Error {
    constructor(key, params = {}, detail = '') {
      super(key);
      this.key = key;
      this.params = params;
      this.detail = detail;
    }
  }

  const askKey = (wrong) => new Promise((resolve) => {
    const dialog = $('#key-dialog');
    const input = $('#key-input');
    $('#key-error').hidden = !wrong;
    input.value = '';
    const done = () => {
      dialog.removeEventListener('close', done);
      const key = dialog.returnValue === 'ok' ? input.value.trim() : '';
      resolve(key || null);
    };
    dialog.addEventListener('close', done);
    dialog.returnValue = '';
    dialog.showModal();
    input.focus();
  });

  // The message a failed response carries: the Leafresh envelope, an OpenAI error, FastAPI's detail.
  const errorDetail = (body) => {
    if (!body || typeof body !== 'object') return '';
    if (typeof body.message === 'string') return body.message;
    if (body.error && typeof body.error.message === 'string') return body.error.message;
    if (typeof body.detail === 'string') return body.detail;
    if (Array.isArray(body.detail)) return body.detail.map((d) => d.msg || JSON.stringify(d)).join('; ');
    return '';
  };

  const friendlyStatus = (status, retryAfter, detail) => {
    // A server without a books catalog says so (a 503 with no Retry-After): not "busy".
    if (status === 503 && !retryAfter && /--catalog books=/.test(detail || '')) {
      return new Friendly('errBooksOff', {}, detail);
    }
    if (status === 429 || status === 503) {
      const s = parseInt(retryAfter, 10);
      return Number.isFinite(s) && s > 0 ? new Friendly('errBusy', { s }, detail) : new Friendly('errBusyNow', {}, detail);
    }
    if (status === 404) return new Friendly('errNotFound', {}, detail);
    if (status >= 400 && status < 500) return new Friendly('errInput', {}, detail);
    return new Friendly('errFailed', {}, detail);
  };

  // fetch with the stored key; a 401 asks for the key (once per refusal) and retries.
  const request = async (url, init = {}) => {
    let wrong = false;
    for (;;) {
      const headers = new Headers(init.headers || {});
      if (state.apiKey) headers.set('Authorization', 'Bearer ' + state.apiKey);
      let res;
      try {
        res = await fetch(url, { ...init, headers });
      } catch (e) {
        if (e.name === 'AbortError') throw e;
        throw new Friendly('errNetwork', {}, String(e.message || e));
      }
      if (res.status === 401) {
        const key = await askKey(wrong || !!state.apiKey);
        if (!key) throw new Friendly('errAuth');
        state.apiKey = key;
        save('apiKey', key);
        wrong = true;
        continue;
      }
      if (!res.ok) {
        // JSON, or (books in streaming mode) one `error` event whose data line is JSON.
        let text = '';
        try { text = await res.text(); } catch (_) { /* the body broke off */ }
        const dataLine = /^data: ?(.*)$/m.exec(text);
        const body = parseJson(text) ?? (dataLine ? parseJson(dataLine[1]) : undefined);
        throw friendlyStatus(res.status, res.headers.get('Retry-After'), errorDetail(body));
      }
      return res;
    }
  };

  // Server-Sent Events of a response body: yields {event, data} per dispatched event (WHATWG
  // rules: `event`/`data` fields, `:` comments, one optional space after the colon, data lines
  // joined by \n, CR/LF/CRLF line ends, an unterminated last event dropped).
  async function* sseEvents(res) {
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    let event = '';
    let data = [];
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += value;
      for (;;) {
        const m = /\r\n|\r|\n/.exec(buf);
        if (!m) break;
        // A CR at the very end may be the first half of a CRLF: wait for the next chunk.
        if (m[0] === '\r' && m.index === buf.length - 1) break;
        const line = buf.slice(0, m.index);
        buf = buf.slice(m.index + m[0].length);
        if (line === '') {
          if (data.length) yield { event: event || 'message', data: data.join('\n') };
          event = '';
          data = [];
          continue;
        }
        if (line.startsWith(':')) continue;
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let v = colon < 0 ? '' : line.slice(colon + 1);
        if (v.startsWith(' ')) v = v.slice(1);
        if (field === 'event') event = v;
        else if (field === 'data') data.push(v);
      }
    }
  }

  const parseJson = (text) => {
    try { return JSON.parse(text); } catch (_) { return undefined; }
  };

  // ---------------------------------------------------------------- one streamed answer
  // Adds the user's message and a streaming bot bubble; `run(stream)` feeds it and returns the
  // final message fields. Handles stop, errors and the developer panel in one place.
  const answer = async (domain, userText, run) => {
    const c = state.conv[domain];
    if (userText !== null) c.messages.push({ role: 'user', text: userText });
    const bot = { role: 'bot', state: 'streaming', text: '', i18n: { key: 'thinking' } };
    c.messages.push(bot);
    persist(domain);
    const controller = new AbortController();
    state.busy = { controller, domain };
    render();
    const node = log.lastElementChild;
    const textNode = node.querySelector('.bubble-text');
    node.querySelector('.bubble').setAttribute('aria-busy', 'true');
    const clock = new Clock();
    const stream = {
      signal: controller.signal,
      clock,
      text: '',
      // Appends streamed text and shows it at once.
      push(fragment) {
        if (!fragment) return;
        clock.text();
        this.text += fragment;
        bot.i18n = undefined;
        bot.text = this.text;
        const follow = nearEnd();
        textNode.replaceChildren(richText(this.text));
        scrollToEnd(follow);
      },
      // Extra content (cards arriving early) below the text.
      extra(nodeToShow) {
        const box = node.querySelector('.bubble');
        box.querySelector('.early')?.remove();
        nodeToShow.classList.add('early');
        box.append(nodeToShow);
      },
    };
    try {
      const final = await run(stream);
      Object.assign(bot, final, { state: final.state || 'done' });
      clock.end = performance.now();
      dev.show(clock.stats(final.usage), final.raw);
      delete bot.raw;
      delete bot.usage;
    } catch (e) {
      clock.end = performance.now();
      if (e.name === 'AbortError') {
        Object.assign(bot, { state: 'stopped', text: (stream.text ? stream.text + '\n' : '') + t('stopped'), i18n: undefined });
      } else {
        const f = e instanceof Friendly ? e : new Friendly('errFailed', {}, String(e.message || e));
        Object.assign(bot, {
          state: 'error', kind: 'error', i18n: { key: f.key, params: f.params }, detail: f.detail || undefined,
          full: stream.text || undefined,
        });
      }
      dev.show(clock.stats(undefined));
    } finally {
      state.busy = null;
      persist(domain);
      if (state.domain === domain) render();
      else renderChrome();
    }
  };

  // ---------------------------------------------------------------- eco
  const ecoUrl = (path, params) => {
    const q = new URLSearchParams({ sessionId: state.sessionId, ...params });
    if (state.lang !== 'ko') q.set('lang', state.lang);
    q.set('usage', '1');
    return `/ai/chatbot/recommendation/${path}?${q}`;
  };

  const ecoStream = (url) => async (stream) => {
    const res = await request(url, { headers: { Accept: 'text/event-stream' }, signal: stream.signal });
    let usage;
    for await (const ev of sseEvents(res)) {
      const env = parseJson(ev.data);
      if (ev.event === 'challenge') {
        stream.push(env && typeof env.data === 'string' ? env.data : '');
      } else if (ev.event === 'usage') {
        usage = normalizeUsage(env);
      } else if (ev.event === 'close') {
        const d = (env && env.data) || {};
        const items = Array.isArray(d.challenges) ? d.challenges : [];
        return {
          text: d.recommend || stream.text, i18n: undefined, cards: { kind: 'eco', items },
          full: stream.text || undefined, usage, raw: { close: env, usage },
        };
      } else if (ev.event === 'error') {
        // The off-topic answer is an `error` event with status 200: it is the bot's answer.
        if (env && env.status === 200) {
          return { text: env.message, i18n: undefined, kind: 'offtopic', raw: { error: env } };
        }
        const status = env && typeof env.status === 'number' ? env.status : 500;
        throw friendlyStatus(status, null, env && env.message);
      }
    }
    throw new Friendly('errEnded');
  };

  const ecoBaseInfo = () => {
    const s = state.conv.eco.selected || {};
    const label = ['location', 'workType', 'category'].map((f) => keywordLabel(f, s[f])).join(' · ');
    return answer('eco', label, ecoStream(ecoUrl('base-info', { location: s.location, workType: s.workType, category: s.category })));
  };
  const ecoFreeText = (message) => answer('eco', message, ecoStream(ecoUrl('free-text', { message })));

  // ---------------------------------------------------------------- books
  // "예시: 행복함, 지침, 불안함 등" → ["행복함", "지침", "불안함"].
  const examples = (text) => String(text || '')
    .replace(/^\s*(예시|example|examples)\s*[:：]\s*/i, '')
    .replace(/\s*등\s*$/, '')
    .split(/\s*,\s*/)
    .filter((s) => s && s.length <= 30);

  const booksAsk = async () => {
    const c = state.conv.books;
    const index = c.books.index;
    const res = await request(`/api/questions?index=${index}`, { headers: { Accept: 'application/json' } });
    const body = await res.json();
    if (body.completed) return null;
    const q = body.question || {};
    c.messages.push({
      role: 'bot', kind: 'question', text: `${t('question', { n: index + 1 })}\n${q.q || ''}`,
      detail: q.example || undefined,
      replies: examples(q.example).map((label) => ({ label, answer: true })),
    });
    persist('books');
    return q;
  };

  const booksNext = async () => {
    if (state.asking) return undefined;
    state.asking = true;
    const started = state.conv.books;
    try {
      const q = await booksAsk();
      if (q === null) {
        state.asking = false;
        return booksRecommend();
      }
    } catch (e) {
      const f = e instanceof Friendly ? e : new Friendly('errFailed', {}, String(e.message || e));
      state.conv.books.messages.push({ role: 'bot', kind: 'error', state: 'error', i18n: { key: f.key, params: f.params }, detail: f.detail || undefined, replies: [{ key: 'restartBooks', restart: true }] });
      persist('books');
    } finally {
      state.asking = false;
    }
    if (state.domain === 'books') render();
    // A new conversation began while this question was on its way: ask its first one.
    if (state.conv.books !== started) booksResume();
    return undefined;
  };

  const bookStream = (body) => async (stream) => {
    const res = await request('/api/recommend-books', {
      method: 'POST',
      headers: { Accept: 'text/event-stream', 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
      signal: stream.signal,
    });
    const done = (d) => {
      const books = Array.isArray(d.books) ? d.books : [];
      return {
        text: books.length ? '' : d.result || stream.text, i18n: books.length ? { key: 'booksLead' } : undefined,
        cards: { kind: 'books', items: books }, full: d.result || stream.text || undefined,
        usage: normalizeUsage(d.usage), raw: d, replies: [{ key: 'restartBooks', restart: true }],
      };
    };
    // A server without the stream answers one JSON body ({"result", "books"?}).
    if (!(res.headers.get('Content-Type') || '').startsWith('text/event-stream')) {
      const d = await res.json();
      stream.push(d.result || '');
      return done(d);
    }
    const early = [];
    for await (const ev of sseEvents(res)) {
      const d = parseJson(ev.data) || {};
      if (ev.event === 'delta') {
        stream.push(typeof d.text === 'string' ? d.text : '');
      } else if (ev.event === 'book') {
        early[Number.isInteger(d.index) ? d.index : early.length] = d;
        stream.extra(bookCards(early.filter(Boolean)));
      } else if (ev.event === 'done') {
        return done(d);
      } else if (ev.event === 'error') {
        throw friendlyStatus(typeof d.status === 'number' ? d.status : 500, null, errorDetail(d));
      }
    }
    throw new Friendly('errEnded');
  };

  const booksRecommend = () => {
    const c = state.conv.books;
    const body = {};
    BOOK_FIELDS.forEach((f, i) => { body[f] = c.books.answers[i] || ''; });
    body.userId = state.sessionId;
    return answer('books', null, bookStream(body)).then(() => {
      const last = c.messages[c.messages.length - 1];
      if (last && last.state === 'done') c.books.done = true;
      else last.replies = [{ key: 'restartBooks', restart: true }];
      persist('books');
      if (state.domain !== 'books') return;
      render();
      // The input is closed now: the keyboard lands on "recommend again".
      if (c.books.done) log.querySelector('.reply')?.focus();
    });
  };

  const booksAnswer = async (text) => {
    const c = state.conv.books;
    if (state.asking || c.books.done || c.books.index >= BOOK_FIELDS.length) return;
    c.messages.push({ role: 'user', text });
    c.books.answers[c.books.index] = text;
    c.books.index += 1;
    persist('books');
    render();
    await booksNext();
  };

  // Opening the books domain asks the next question when none is waiting (first visit, or a
  // reload that came between an answer and the next question).
  const booksResume = () => {
    if (state.domain !== 'books' || state.busy) return;
    const c = state.conv.books;
    const last = c.messages[c.messages.length - 1];
    if (!c.books.done && (!last || last.role === 'user')) booksNext();
  };

  const booksRestart = async () => {
    state.conv.books = emptyConv('books');
    persist('books');
    render();
    await booksNext();
  };

  // ---------------------------------------------------------------- free chat
  const chatModel = async (signal) => {
    if (state.model) return state.model;
    const res = await request('/v1/models', { signal });
    const body = await res.json();
    const id = body && Array.isArray(body.data) && body.data[0] && body.data[0].id;
    if (!id) throw new Friendly('errFailed', {}, 'GET /v1/models listed no model');
    state.model = id;
    return id;
  };

  const chatStream = (history) => async (stream) => {
    const model = await chatModel(stream.signal);
    const res = await request('/v1/chat/completions', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Accept: 'text/event-stream' },
      body: JSON.stringify({ model, messages: history, stream: true, stream_options: { include_usage: true } }),
      signal: stream.signal,
    });
    let usage; let raw; let finish = null; let id = null;
    for await (const ev of sseEvents(res)) {
      if (ev.data === '[DONE]') {
        const full = { id, model, object: 'chat.completion', choices: [{ index: 0, message: { role: 'assistant', content: stream.text }, finish_reason: finish }], usage: raw };
        return { text: stream.text, i18n: undefined, usage, raw: full };
      }
      const chunk = parseJson(ev.data);
      if (!chunk) continue;
      if (ev.event === 'error' || chunk.error) throw friendlyStatus(500, null, errorDetail(chunk));
      id = chunk.id || id;
      const choice = chunk.choices && chunk.choices[0];
      if (choice && choice.delta && typeof choice.delta.content === 'string') stream.push(choice.delta.content);
      if (choice && choice.finish_reason) finish = choice.finish_reason;
      if (chunk.usage) { raw = chunk.usage; usage = normalizeUsage(chunk.usage); }
    }
    throw new Friendly('errEnded');
  };

  const chatSend = (text) => {
    const history = state.conv.chat.messages
      .filter((m) => (m.role === 'user' || m.state === 'done') && !m.i18n && m.text)
      .map((m) => ({ role: m.role === 'user' ? 'user' : 'assistant', content: m.text }));
    history.push({ role: 'user', content: text });
    return answer('chat', text, chatStream(history.slice(-CHAT_HISTORY_MESSAGES)));
  };

  // ---------------------------------------------------------------- input
  const quickReply = (r) => {
    if (state.busy) return;
    // The pressed button goes away with the re-render: keep the keyboard user at the input.
    $('#composer-input').focus();
    if (r.restart) booksRestart();
    else if (r.answer) booksAnswer(r.label);
  };

  const send = () => {
    const input = $('#composer-input');
    const text = input.value.trim();
    if (!text || state.busy) return;
    if (state.domain === 'books' && (conv().books.done || state.asking)) return;
    input.value = '';
    autosize();
    if (state.domain === 'eco') ecoFreeText(text);
    else if (state.domain === 'books') booksAnswer(text);
    else chatSend(text);
  };

  const autosize = () => {
    const input = $('#composer-input');
    input.style.height = 'auto';
    input.style.height = Math.min(input.scrollHeight, 200) + 'px';
  };

  const switchDomain = (domain) => {
    if (domain === state.domain) return;
    if (state.busy) state.busy.controller.abort();
    state.domain = domain;
    save('domain', domain);
    render();
    booksResume();
  };

  const reset = () => {
    if (state.busy) state.busy.controller.abort();
    state.conv[state.domain] = emptyConv(state.domain);
    if (state.domain === 'eco') {
      // The eco conversation lives on the server under the session id: a new one starts fresh.
      state.sessionId = newSessionId();
      save('sessionId', state.sessionId);
    }
    persist();
    render();
    if (state.domain === 'books') booksNext();
    $('#composer-input').focus();
  };

  const init = () => {
    for (const b of document.querySelectorAll('.domain')) b.addEventListener('click', () => switchDomain(b.dataset.domain));
    $('#lang').addEventListener('change', (e) => {
      state.lang = STRINGS[e.target.value] ? e.target.value : 'ko';
      save('lang', state.lang);
      render();
    });
    $('#dev-toggle').addEventListener('click', () => {
      state.devOpen = !state.devOpen;
      save('devOpen', state.devOpen);
      renderChrome();
    });
    $('#reset').addEventListener('click', reset);
    $('#eco-send').addEventListener('click', () => {
      if (state.busy) return;
      $('#composer-input').focus(); // the button is disabled while the answer streams
      ecoBaseInfo();
    });
    $('#stop').addEventListener('click', () => state.busy && state.busy.controller.abort());
    $('#composer').addEventListener('submit', (e) => { e.preventDefault(); send(); });
    const input = $('#composer-input');
    input.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); send(); }
    });
    input.addEventListener('input', autosize);
    // A reload mid-answer keeps what had streamed so far.
    window.addEventListener('pagehide', () => { if (state.busy) persist(state.busy.domain); });
    // An answer cut off by a reload is kept as stopped, not left "streaming" forever.
    for (const d of DOMAINS) {
      for (const m of state.conv[d].messages) {
        if (m.state === 'streaming') {
          Object.assign(m, { state: 'stopped', i18n: m.text ? undefined : { key: 'stopped' } });
          if (d === 'books') m.replies = [{ key: 'restartBooks', restart: true }];
        }
      }
    }
    render();
    booksResume();
  };

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
